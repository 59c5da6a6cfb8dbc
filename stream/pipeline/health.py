"""Streams that are alive but wrong: a frozen picture (an encoder that repeats its last frame) or a blank one (a
covered lens, a dead sensor, a black test pattern). Every peer reports such a camera as healthy, and the
classifier then labels a still image for hours.

Cheap by design: each live frame is sampled on a fixed grid of about 64×36 raw pixels (a strided view, no
resize, no colour conversion: 73 µs a 720p frame, measured here under load). Raw pixels, not an average,
because averaging wipes out exactly the sensor noise that tells a still scene from a repeated frame. A frame
is "the same" as the one before when the mean absolute difference of the samples is below SAME_MEAN (a level
in 255) and no sample moved more than SAME_MAX; blank when the samples' spread is below BLANK_SPREAD. A stream
is frozen once FROZEN_SHARE of its frame pairs over the last `frozen_after_s` were the same (an encoder's
keyframe refresh of a still picture is no motion), blank after `blank_after_s` of blank frames (blank wins: a
frozen black frame is blank). Motion (half of the latest pairs changed), or a frame with contrast, ends it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

FROZEN, BLANK = "frozen", "blank"
GRID = (36, 64)  # rows, columns sampled
SAME_MEAN, SAME_MAX = 0.3, 8  # a decoder's rounding on a re-encoded still frame stays within these
FROZEN_SHARE = 0.75  # of the window's frame pairs alike (keyframe refreshes of a still picture are the rest)
RECENT_PAIRS = 10  # a frozen stream moves again when more than half of its latest pairs changed
BLANK_SPREAD = 4.0  # standard deviation of the samples, in levels of 255 (a photo at a tenth of its light: ~6)


@dataclass(frozen=True)
class HealthRules:
    frozen_after_s: float = 10.0
    blank_after_s: float = 5.0
    reconnect_frozen: bool = False  # reconnect a frozen stream, as if it had stalled

    @property
    def enabled(self) -> bool:
        return self.frozen_after_s > 0 or self.blank_after_s > 0


@dataclass(frozen=True)
class HealthSummary:
    """What the report says of a stream's health over the run (seconds on the stream's capture clock)."""

    frozen_s: float
    blank_s: float
    frozen_episodes: int
    blank_episodes: int


def sample(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    return image[::max(h // GRID[0], 1), ::max(w // GRID[1], 1)].astype(np.int16)


class HealthWatch:
    """Fed every frame of one live stream, in order; says whether the stream is frozen, blank or fine."""

    def __init__(self, rules: HealthRules) -> None:
        self.rules = rules
        self.state: str | None = None
        self._previous: np.ndarray | None = None
        self._pairs: deque[tuple[float, bool]] = deque()  # (time, same as the frame before) within the window
        self._compared_since: float | None = None  # the first comparison since the start or a reconnect
        self._blank_since: float | None = None
        self._since: float | None = None  # when the current state began
        self._seconds = {FROZEN: 0.0, BLANK: 0.0}
        self._episodes = {FROZEN: 0, BLANK: 0}

    def observe(self, image: np.ndarray, now: float) -> str | None:
        current = sample(image)
        previous, self._previous = self._previous, current
        blank = float(current.std()) < BLANK_SPREAD
        self._blank_since = (self._blank_since or now) if blank else None
        if previous is not None and previous.shape == current.shape:
            diff = np.abs(current - previous)
            self._pairs.append((now, float(diff.mean()) < SAME_MEAN and int(diff.max()) <= SAME_MAX))
            self._compared_since = self._compared_since or now
        while self._pairs and self._pairs[0][0] < now - self.rules.frozen_after_s:
            self._pairs.popleft()
        state = None
        if self._blank_since is not None and self.rules.blank_after_s > 0 and \
                now - self._blank_since >= self.rules.blank_after_s:
            state = BLANK
        elif self.rules.frozen_after_s > 0 and self._frozen(now):
            state = FROZEN
        if self.state == FROZEN and state != FROZEN:  # moving again: a whole new window of repeats to freeze again
            self._pairs.clear()
            self._compared_since = None
        self._enter(state, now)
        return state

    def _frozen(self, now: float) -> bool:
        """Mostly repeats over a whole window. A rate-controlled H.264 encoder refreshes a still picture at every
        keyframe: the keyframe and the few frames after it decode up to ~1.3 levels of 255 apart on average (x264
        through GStreamer, 2 Mbit/s), about one pair in seven; sensor noise changes every pair. Once frozen, it
        stays so until half the latest pairs change (motion), so a refresh at the window's edge cannot flap it."""
        pairs = self._pairs
        if not pairs or self._compared_since is None or now - self._compared_since < self.rules.frozen_after_s:
            return False
        if self.state == FROZEN:
            recent = list(pairs)[-RECENT_PAIRS:]
            return sum(same for _, same in recent) * 2 > len(recent)
        return sum(same for _, same in pairs) >= FROZEN_SHARE * len(pairs)

    def _enter(self, state: str | None, now: float) -> None:
        if state == self.state:
            return
        self._close(now)
        self.state, self._since = state, now
        if state is not None:
            self._episodes[state] += 1

    def _close(self, now: float) -> None:
        if self.state is not None and self._since is not None:
            self._seconds[self.state] += now - self._since

    def reset(self) -> None:
        """A new connection: its first frames are not compared with the old one's."""
        self._previous, self._compared_since, self._blank_since = None, None, None
        self._pairs.clear()

    def summary(self, now: float) -> HealthSummary:
        seconds = dict(self._seconds)
        if self.state is not None and self._since is not None:
            seconds[self.state] += now - self._since
        return HealthSummary(round(seconds[FROZEN], 3), round(seconds[BLANK], 3), self._episodes[FROZEN],
                             self._episodes[BLANK])
