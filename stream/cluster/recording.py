"""Statistics across processes: the stream actor records what its collector saw, the driver replays it.

The driver's collectors are the project's own (stream.observe.stats), fed the same calls the local engine
makes, so the dashboard, the verdict and the report are computed by the same code. Stamps come from
the actor's monotonic clock; the driver moves them onto its own by one offset per actor incarnation
(measured once, half a round trip of error). Durations are differences within one actor, unchanged.
"""

from __future__ import annotations

import threading

import numpy as np

from stream.cluster.wire import Captured, Event, Inferred, Rendered
from stream.frames import Classified, Frame, Prediction
from stream.observe.stats import StatsCollector

NO_IMAGE = np.empty((0, 0, 3), np.uint8)


class RecordingCollector(StatsCollector):
    """A stream's own collector that also keeps each event until the driver drains it."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._events: list[Event] = []
        self._events_lock = threading.Lock()

    def captured(self, at: float) -> None:
        super().captured(at)
        with self._events_lock:
            self._events.append(Captured(at))

    def inferred(self, prediction: Prediction) -> None:
        super().inferred(prediction)
        with self._events_lock:
            self._events.append(Inferred(prediction))

    def rendered(self, item: Classified, render_ms: float, at: float) -> None:
        super().rendered(item, render_ms, at)
        with self._events_lock:
            self._events.append(Rendered(item.frame.index, item.frame.captured_at, item.prediction, render_ms, at))

    def drain(self) -> list[Event]:
        with self._events_lock:
            events, self._events = self._events, []
        return events


def replay(events: list[Event], offset: float, stream: int, collectors: list[StatsCollector]) -> None:
    """Feed `events` (actor clock + `offset` = driver clock) to each collector, as the local stages would."""
    for event in events:
        if isinstance(event, Captured):
            for c in collectors:
                c.captured(event.at + offset)
        elif isinstance(event, Inferred):
            p = event.prediction
            moved = Prediction(p.frame_index, p.top, p.times, p.done_at + offset)
            for c in collectors:
                c.inferred(moved)
        else:
            frame = Frame(event.frame_index, NO_IMAGE, event.captured_at + offset, 0.0, stream)
            for c in collectors:
                c.rendered(Classified(frame, event.prediction), event.render_ms, event.at + offset)


def event_time(event: Event) -> float:
    if isinstance(event, Captured):
        return event.at
    return event.prediction.done_at if isinstance(event, Inferred) else event.at
