"""A stream's pre-roll: its newest frames as JPEG, bounded in stream time and in bytes, oldest evicted first.

Raw 720p frames are 2.7 MB each; as JPEG (quality 80) about 75 kB, so a few seconds cost a few MB. The time bound
is what the stream's clip rules can ask for (their longest pre_roll_s) plus a margin; the byte bound
(--clip-buffer-mb) caps a stream whose frames are large or whose rate is high, at the cost of a shorter pre-roll
(those evictions are counted).
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass

import numpy as np

MARGIN_S = 1.0  # beyond the longest pre-roll: the frames between an event's time and the frame that reports it


@dataclass(frozen=True)
class Encoded:
    index: int
    time_s: float
    jpeg: np.ndarray  # cv2.imencode's buffer, kept as is (no copy into bytes)


class PreRoll:
    def __init__(self, keep_s: float, max_bytes: int) -> None:
        self.keep_s, self.max_bytes = keep_s, max_bytes
        self.frames: deque[Encoded] = deque()
        self.bytes = 0
        self.peak_bytes = 0  # held after each frame's evictions: what the bound promises
        self.evicted_by_bytes = 0

    def add(self, frame: Encoded) -> None:
        if self.frames and frame.time_s < self.frames[-1].time_s:  # the stream's clock restarted: older is not before
            self.clear()
        self.frames.append(frame)
        self.bytes += frame.jpeg.nbytes
        while self.frames[0].time_s < frame.time_s - self.keep_s:  # time first: only what the bytes alone cost counts
            self._pop()
        while self.bytes > self.max_bytes:
            self._pop()
            self.evicted_by_bytes += 1
        self.peak_bytes = max(self.peak_bytes, self.bytes)

    def since(self, time_s: float) -> list[Encoded]:
        return [f for f in self.frames if f.time_s >= time_s]

    def newest(self) -> Encoded | None:
        return self.frames[-1] if self.frames else None

    def fps(self, default: float) -> float:
        """The stream's rate from its frames' spacing: the median, so a dropped frame does not halve it."""
        times = [f.time_s for f in self.frames]
        gaps = [b - a for a, b in zip(times, times[1:], strict=False) if b > a]
        if not gaps:
            return default
        return min(max(1.0 / statistics.median(gaps), 1.0), 240.0)

    def clear(self) -> None:
        self.frames.clear()
        self.bytes = 0

    def _pop(self) -> None:
        self.bytes -= self.frames.popleft().jpeg.nbytes
