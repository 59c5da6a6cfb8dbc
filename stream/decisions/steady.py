"""A stream's steady label: the top-5 smoothed over frames, taken with hysteresis and a dwell, and its segments.

Smoothing works on each frame's top-5 only (the Ray engine sends no more): a class outside a frame's top-5
counts as 0 for that frame. A class that reaches `enter` is almost always in the top-5, so the choice is the
same as over the whole distribution; the smoothed probabilities of the others are a little low.

A label is *taken* once the smoothed best class has stayed at or above `enter` for `min_dwell_s` of stream
time, and is then dated back to when it first qualified, so segment boundaries follow the video, not the dwell.
It is *left* when its smoothed probability falls below `exit`, or when another label is taken. In between
the stream is `uncertain`; frames of a frozen or blank picture count as uncertain (their labels are not the
scene's).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from stream.decisions.records import Segment
from stream.decisions.rules import Smoothing
from stream.frames import UNCERTAIN, Steady, TopK

PRUNE = 1e-4  # smoothed probabilities below this are forgotten (bounds the state of an EMA)


class Smoother:
    def __init__(self, s: Smoothing) -> None:
        self.s = s
        self.ema: dict[str, float] = {}
        self.votes: deque[str | None] = deque(maxlen=s.window)

    def update(self, top: list[TopK] | None) -> dict[str, float]:
        """The smoothed distribution after this frame; `top` None: a frame whose labels do not count."""
        method = self.s.method
        if method == "none":
            return {t.label: t.prob for t in top} if top else {}
        if method == "majority":
            self.votes.append(top[0].label if top else None)
            counts: dict[str, float] = {}
            for label in self.votes:
                if label is not None:
                    counts[label] = counts.get(label, 0.0) + 1.0
            n = self.s.window  # not the votes so far: one frame at the start must not count as a full majority
            return {label: c / n for label, c in counts.items()}
        keep = 1.0 - self.s.alpha
        ema = {label: p * keep for label, p in self.ema.items() if p * keep >= PRUNE}
        for t in top or ():
            ema[t.label] = ema.get(t.label, 0.0) + self.s.alpha * t.prob
        self.ema = ema
        return ema


@dataclass
class _Held:
    """The label being held or tried, since when, and its smoothed probabilities meanwhile."""

    label: str
    since_s: float
    since_frame: int
    peak: float = 0.0
    total: float = 0.0
    frames: int = 0
    last_frame: int = 0
    saved: tuple | None = None  # its figures when a challenger appeared: its segment ends there if it is taken

    def add(self, frame: int, p: float) -> None:
        self.peak = max(self.peak, p)
        self.total += p
        self.frames += 1
        self.last_frame = frame

    def save(self) -> None:
        self.saved = (self.peak, self.total, self.frames, self.last_frame)

    def restore(self) -> None:
        if self.saved is not None:
            self.peak, self.total, self.frames, self.last_frame = self.saved


class SteadyLabeler:
    def __init__(self, stream: str, s: Smoothing) -> None:
        self.stream, self.s = stream, s
        self.smoother = Smoother(s)
        self.held: _Held | None = None  # None: uncertain
        self.candidate: _Held | None = None
        self.uncertain_since = (0.0, 0)
        self.last_frame: int | None = None
        self.last_s = 0.0

    def update(self, frame: int, time_s: float, top: list[TopK] | None) -> tuple[Steady, list[Segment]]:
        """This frame's steady label, and the segments it closed."""
        if self.last_frame is None:
            self.uncertain_since = (time_s, frame)
        dist = self.smoother.update(top)
        best, p_best = max(dist.items(), key=lambda kv: kv[1]) if dist else (UNCERTAIN, 0.0)
        closed: list[Segment] = []
        held, candidate = self.held, self.candidate
        p_held = dist.get(held.label, 0.0) if held is not None else 0.0
        if best != (held.label if held else None) and p_best >= self.s.enter:
            if candidate is None or candidate.label != best:
                candidate = self.candidate = _Held(best, time_s, frame)
                if held is not None:
                    held.save()
            candidate.add(frame, p_best)
            if held is not None and p_held < self.s.exit:  # left at once, even while the challenger dwells
                held.restore()
                closed.append(self._close(held, candidate.since_s))
                self.held, held = None, None
                self.uncertain_since = (candidate.since_s, candidate.since_frame)
            elif held is not None:
                held.add(frame, p_held)
            if time_s - candidate.since_s >= self.s.min_dwell_s:
                if held is not None:
                    held.restore()
                    closed.append(self._close(held, candidate.since_s))
                self.held, self.candidate = candidate, None
        else:
            self.candidate = None
            if held is not None and p_held < self.s.exit:
                closed.append(self._close(held, time_s))
                self.held, self.uncertain_since = None, (time_s, frame)
            elif held is not None:
                held.add(frame, p_held)
        self.last_frame, self.last_s = frame, time_s
        if self.held is None:
            return Steady(UNCERTAIN, p_best, *self.uncertain_since), closed
        return Steady(self.held.label, dist.get(self.held.label, 0.0), self.held.since_s,
                      self.held.since_frame), closed

    def finish(self) -> list[Segment]:
        """The end of the stream closes its open segment at its last frame."""
        if self.held is None or self.last_frame is None:
            return []
        segment = self._close(self.held, self.last_s)
        self.held = None
        return [segment]

    def _close(self, held: _Held, end_s: float) -> Segment:
        """`end_s`: when the next state began (or the stream's last frame); its figures are up to its last frame."""
        mean = held.total / held.frames if held.frames else 0.0
        return Segment(self.stream, held.label, held.since_frame, held.last_frame, held.since_s, end_s, held.peak,
                       mean, held.frames)
