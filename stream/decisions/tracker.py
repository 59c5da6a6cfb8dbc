"""One rule on one stream: when its steady labels have held `min_duration_s`, a start; when they go, an end.

Times are the stream's own (media time for a file), so a file gives the same events however fast it is read.
A start within `cooldown_s` of the previous start is held back until the cooldown is over, and only fires then
if the label still holds. Moving between two of the rule's labels continues the event.
"""

from __future__ import annotations

from dataclasses import dataclass

from stream.decisions.rules import Rule
from stream.frames import UNCERTAIN, Steady


@dataclass(frozen=True)
class Fired:
    type: str  # start | end
    rule: str
    label: str
    prob: float
    time_s: float
    frame: int


class RuleTracker:
    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.matched_since: float | None = None
        self.active: Fired | None = None  # the start of the event under way
        self.peak = 0.0
        self.last_start_s = float("-inf")

    def update(self, frame: int, time_s: float, steady: Steady) -> Fired | None:
        rule = self.rule
        matched = steady.label != UNCERTAIN and rule.matches(steady.label)
        if not matched:
            self.matched_since = None
            if self.active is not None and steady.since_s >= self.active.time_s:  # when the new state began
                return self._end(steady.since_frame, steady.since_s)
            return self._end(frame, time_s)
        if self.matched_since is None:
            self.matched_since = steady.since_s
        if self.active is not None:
            self.peak = max(self.peak, steady.prob)
            return None
        if time_s - self.matched_since >= rule.min_duration_s and time_s - self.last_start_s >= rule.cooldown_s:
            self.active = Fired("start", rule.name, steady.label, steady.prob, time_s, frame)
            self.peak, self.last_start_s = steady.prob, time_s
            return self.active
        return None

    def finish(self, frame: int, time_s: float) -> Fired | None:
        """The stream ended: an event under way ends with it."""
        self.matched_since = None
        return self._end(frame, time_s)

    def _end(self, frame: int, time_s: float) -> Fired | None:
        if self.active is None:
            return None
        start, self.active = self.active, None
        return Fired("end", start.rule, start.label, self.peak, time_s, frame)
