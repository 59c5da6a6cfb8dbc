"""Per-stream frame buffers feeding one batcher, in the manner of DeepStream's nvstreammux.

Each stream has a small buffer of its own: a live stream keeps its newest frames (the oldest is
dropped, counted as "full"), a file stream is lossless (its capture waits for room). The batcher
takes frames from the streams in turn, so no stream is starved, and hands a batch over when it is
full or when `timeout_s` has passed since its first frame: it never waits for a stream that has
nothing. Live frames older than the staleness limit are dropped before inference, counted as
"stale". One lock and one condition for all buffers; every wait is bounded and watches the stop Event.

Streams join (`add`) and leave (`close`, then the batcher reports their end once their buffer is empty) while
it runs; a lane that has left is forgotten but for its drop counts. `keep_open` makes a run that has no
stream left wait for new ones instead of finishing.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

from stream.frames import Frame
from stream.pipeline.queues import Stopped

POLL_S = 0.05


@dataclass(frozen=True)
class Lane:
    """How one stream's buffer behaves."""

    live: bool  # keep the newest frames (drop the oldest) rather than wait for room
    size: int


@dataclass(frozen=True)
class StreamEnd:
    stream: int
    reason: str


@dataclass(frozen=True)
class MuxBatch:
    frames: list[Frame]
    ended: list[StreamEnd] = field(default_factory=list)
    finished: bool = False  # every stream has ended and every frame was taken


@dataclass
class _Buffer:
    lane: Lane
    frames: deque = field(default_factory=deque)
    closed: str | None = None  # the end reason, once the capture side is done
    reported: bool = False
    waiting: bool = False  # the producer is blocked for room: downstream is busy, not the source silent
    dropped_full: int = 0
    dropped_stale: int = 0
    dropped_stop: int = 0


class StreamMux:
    def __init__(self, lanes: list[Lane], stop: threading.Event, keep_open: bool = False) -> None:
        if not lanes and not keep_open:
            raise ValueError("a mux that is not kept open needs at least one stream")
        self._buffers: dict[int, _Buffer] = {}
        self._retired: dict[int, dict[str, int]] = {}  # drops of the streams that left
        self._cond = threading.Condition()
        self._stop = stop
        self._next = 0  # the stream served first in the next round
        self.keep_open = keep_open
        for i, lane in enumerate(lanes):
            self.add(i, lane)

    def add(self, stream: int, lane: Lane) -> None:
        if lane.size < 1:
            raise ValueError("every stream needs a buffer of at least one frame")
        with self._cond:
            if stream in self._buffers or stream in self._retired:
                raise ValueError(f"stream {stream} already has a buffer")
            self._buffers[stream] = _Buffer(lane)
            self._cond.notify_all()

    def release(self) -> None:
        """No more streams will join: the batcher finishes once every stream has ended."""
        with self._cond:
            self.keep_open = False
            self._cond.notify_all()

    # ---- producer side (one capture thread per stream)

    def put(self, stream: int, frame: Frame) -> None:
        with self._cond:
            buf = self._buffers.get(stream)
            if buf is None or buf.closed is not None:  # the stream was removed: its late frames are never shown
                if buf is not None:
                    buf.dropped_stop += 1
                elif stream in self._retired:  # ... even after its lane left the rounds: still counted
                    self._retired[stream]["at_stop"] += 1
                return
            if buf.lane.live:
                while len(buf.frames) >= buf.lane.size:
                    buf.frames.popleft()
                    buf.dropped_full += 1
            else:
                buf.waiting = True
                try:
                    while len(buf.frames) >= buf.lane.size:
                        if self._stop.is_set():
                            raise Stopped
                        if buf.closed is not None:  # removed while this frame waited for room
                            buf.dropped_stop += 1
                            return
                        self._cond.wait(POLL_S)
                finally:
                    buf.waiting = False
            buf.frames.append(frame)
            self._cond.notify_all()

    def close(self, stream: int, reason: str) -> None:
        """The stream ends (its source did, or it was removed): what it buffered is still taken."""
        with self._cond:
            buf = self._buffers.get(stream)
            if buf is not None and buf.closed is None:
                buf.closed = reason
            self._cond.notify_all()

    # ---- consumer side (the batcher)

    def take(self, max_batch: int, timeout_s: float, stale_s: float | None) -> MuxBatch:
        """Up to `max_batch` frames across streams, in turn; waits at most `timeout_s` once one is in hand."""
        frames: list[Frame] = []
        deadline = None
        with self._cond:
            while True:
                if self._stop.is_set():
                    raise Stopped
                self._drop_stale(stale_s)
                self._collect(frames, max_batch)
                ended = self._ended()
                if frames and deadline is None:
                    deadline = time.perf_counter() + timeout_s
                if len(frames) >= max_batch or (frames and time.perf_counter() >= deadline) or (ended and not frames):
                    return MuxBatch(frames, ended, self._finished())
                if not frames and self._finished():
                    return MuxBatch([], ended, True)
                if ended:  # report ends promptly, with what is in hand
                    return MuxBatch(frames, ended, self._finished())
                wait = POLL_S if deadline is None else min(POLL_S, max(deadline - time.perf_counter(), 0.0))
                self._cond.wait(wait)

    def _collect(self, frames: list[Frame], max_batch: int) -> None:
        buffers = list(self._buffers.values())
        n = len(buffers)
        took = True
        while len(frames) < max_batch and took:
            took = False
            for k in range(n):
                buf = buffers[(self._next + k) % n]
                if buf.frames and len(frames) < max_batch:
                    frames.append(buf.frames.popleft())
                    took = True
            self._next = (self._next + 1) % max(n, 1)
        if frames:
            self._cond.notify_all()  # room for producers waiting on a full buffer

    def _drop_stale(self, stale_s: float | None) -> None:
        if stale_s is None:
            return
        cutoff = time.perf_counter() - stale_s
        for buf in self._buffers.values():
            while buf.lane.live and buf.frames and buf.frames[0].captured_at < cutoff:
                buf.frames.popleft()
                buf.dropped_stale += 1

    def _ended(self) -> list[StreamEnd]:
        out = []
        for i, buf in list(self._buffers.items()):
            if buf.closed is not None and not buf.frames and not buf.reported:
                buf.reported = True
                out.append(StreamEnd(i, buf.closed))
                # Gone from the rounds: the batcher never looks at (or waits on) a stream that left.
                self._retired[i] = _drops(buf)
                del self._buffers[i]
        return out

    def _finished(self) -> bool:
        return not self.keep_open and not self._buffers

    # ---- figures

    def active(self) -> list[int]:
        """The streams in the batcher's rounds: those that have not ended, or whose last frames wait to be taken."""
        with self._cond:
            return list(self._buffers)

    def drops(self, stream: int) -> dict[str, int]:
        with self._cond:
            buf = self._buffers.get(stream)
            return _drops(buf) if buf is not None else dict(self._retired.get(stream, _NO_DROPS))

    def dropped(self, stream: int) -> int:
        return sum(self.drops(stream).values())

    def forget(self, stream: int) -> None:
        """A stream that left and is no longer listed: its drop counts go too (the session keeps their sum)."""
        with self._cond:
            self._retired.pop(stream, None)

    def fill(self, stream: int) -> int:
        with self._cond:
            buf = self._buffers.get(stream)
            return len(buf.frames) if buf is not None else 0

    def waiting_for_room(self, stream: int) -> bool:
        with self._cond:
            buf = self._buffers.get(stream)
            return buf is not None and buf.waiting

    def discard_unprocessed(self) -> None:
        """After a stop: frames read but never taken are dropped, cause "at stop", so every frame read is
        either processed or counted as dropped."""
        with self._cond:
            for buf in self._buffers.values():
                buf.dropped_stop += len(buf.frames)
                buf.frames.clear()


_NO_DROPS = {"full": 0, "stale": 0, "at_stop": 0}


def _drops(buf: _Buffer) -> dict[str, int]:
    return {"full": buf.dropped_full, "stale": buf.dropped_stale, "at_stop": buf.dropped_stop}
