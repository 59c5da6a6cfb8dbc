"""The decisions stage of a run: each stream's steady label, segments and rule events, handed to the outputs.

It runs on the render thread, between postprocessing and drawing (`decide`, so the overlay shows the steady
label), and again after drawing (`rendered`: the annotated frame feeds the clips' pre-roll and the snapshots,
and the frame's events go out). Every output takes what it can without blocking (stream.decisions.records).
A stream that ends or leaves closes its open segment and its events (`finish`); the run's end closes them all.
"""

from __future__ import annotations

import datetime
from collections import Counter, deque
from dataclasses import dataclass, field, replace

from stream.decisions.records import Delivery, Event, EventMedia, EventOutput, Segment, SegmentOutput
from stream.decisions.rules import RuleSet
from stream.decisions.steady import SteadyLabeler
from stream.decisions.tracker import Fired, RuleTracker
from stream.frames import Classified, Steady

RECENT_EVENTS = 100  # kept for the page and /api/events
RECENT_SEGMENTS = 200  # per stream, for the page's timeline
REPORT_KEEP = 1000  # per stream, in the report (the files hold them all)
KEEP_FINISHED = 32  # ended streams whose timeline the page still shows


def wall_now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class StreamView:
    name: str
    steady: Steady | None
    now_s: float  # the stream's time at its newest frame
    segments: tuple[Segment, ...]  # closed, oldest first
    open: Segment | None  # the label held now, so far


@dataclass(frozen=True)
class DecisionsView:
    streams: tuple[StreamView, ...] = ()
    events: tuple[Event, ...] = ()  # newest last
    counts: tuple[tuple[str, str, str, int], ...] = ()  # (rule, label, type, events)
    deliveries: tuple[Delivery, ...] = ()


@dataclass
class _Kept:
    segments: deque = field(default_factory=lambda: deque(maxlen=REPORT_KEEP))
    events: deque = field(default_factory=lambda: deque(maxlen=REPORT_KEEP))
    segment_count: int = 0
    event_count: int = 0


class StreamDecider:
    def __init__(self, hub: Decisions, name: str) -> None:
        self.hub, self.name = hub, name
        self.labeler = SteadyLabeler(name, hub.rules.smoothing)
        self.trackers = [RuleTracker(r) for r in hub.rules.for_stream(name)]
        self.steady: Steady | None = None
        self.pending: list[Fired] = []
        self.recent: deque[Segment] = deque(maxlen=RECENT_SEGMENTS)
        self.kept = hub.kept.setdefault(name, _Kept())
        self.media = hub.media  # every start gets a snapshot; only streams with clip rules feed a pre-roll
        self.feeds = self.media is not None and self.media.wants(name)
        self.now_s = 0.0
        self.last_frame = 0
        self.finished = False

    def decide(self, item: Classified) -> Classified:
        frame = item.frame
        top = None if frame.health is not None else item.prediction.top
        steady, closed = self.labeler.update(frame.index, frame.time_s, top)
        self.now_s, self.last_frame = frame.time_s, frame.index
        for segment in closed:
            self._segment(segment)
        if self.steady is None or steady.label != self.steady.label:
            for out in self.hub.outputs:
                out.steady(self.name, steady)
        self.steady = steady
        for tracker in self.trackers:
            fired = tracker.update(frame.index, frame.time_s, steady)
            if fired is not None:
                self.pending.append(fired)
        return replace(item, steady=steady)

    def rendered(self, item: Classified, annotated) -> None:
        if self.feeds:
            self.media.frame(self.name, item.frame.index, item.frame.time_s, annotated)
        pending, self.pending = self.pending, []
        for fired in pending:
            self._event(fired, annotated)

    def finish(self) -> None:
        """The stream's end: its open events end and its open segment closes, at its last frame."""
        if self.finished:
            return
        self.finished = True
        for fired in self.pending:  # decided but never drawn (a stop between the two): still published
            self._event(fired, None)
        self.pending = []
        for tracker in self.trackers:
            fired = tracker.finish(self.last_frame, self.now_s)
            if fired is not None:
                self._event(fired, None)
        for segment in self.labeler.finish():
            self._segment(segment)
        if self.media is not None:
            self.media.stream_ended(self.name)
        for out in self.hub.outputs:
            out.stream_gone(self.name)
        self.hub.forget_finished()

    def view(self) -> StreamView:
        held = self.labeler.held
        open_ = None
        if held is not None:
            mean = held.total / held.frames if held.frames else 0.0
            open_ = Segment(self.name, held.label, held.since_frame, self.last_frame, held.since_s, self.now_s,
                            held.peak, mean, held.frames)
        return StreamView(self.name, self.steady, self.now_s, tuple(self.recent), open_)

    def _segment(self, segment: Segment) -> None:
        self.recent.append(segment)
        self.kept.segments.append(segment)
        self.kept.segment_count += 1
        if self.hub.segments is not None:
            self.hub.segments.segment(segment)

    def _event(self, fired: Fired, annotated) -> None:
        event = Event(fired.type, fired.rule, self.name, fired.label, fired.prob, fired.time_s, fired.frame,
                      self.hub.clock())
        if self.media is not None:
            if fired.type == "start":
                snapshot, clip = self.media.start(event, annotated)
            else:
                snapshot, clip = None, self.media.end(event)
            event = replace(event, snapshot=snapshot, clip=clip)
        self.hub.publish(event)
        self.kept.events.append(event)
        self.kept.event_count += 1


class Decisions:
    def __init__(self, rules: RuleSet, outputs: list[EventOutput] = (), media: EventMedia | None = None,
                 segments: SegmentOutput | None = None, clock=wall_now) -> None:
        self.rules, self.outputs, self.media, self.segments, self.clock = rules, list(outputs), media, segments, clock
        self.streams: dict[str, StreamDecider] = {}
        self.kept: dict[str, _Kept] = {}
        self.events: deque[Event] = deque(maxlen=RECENT_EVENTS)
        self.counts: Counter[tuple[str, str, str]] = Counter()
        self.closed = False

    def open(self, name: str) -> StreamDecider:
        decider = self.streams[name] = StreamDecider(self, name)
        return decider

    def forget_finished(self) -> None:
        """An ended stream's timeline stays on show (the page keeps its last frame too); a long service whose
        streams come and go under new names keeps only the newest KEEP_FINISHED of them (their counts stay)."""
        finished = [name for name, d in self.streams.items() if d.finished]
        for name in finished[:max(len(finished) - KEEP_FINISHED, 0)]:
            del self.streams[name]

    def publish(self, event: Event) -> None:
        self.events.append(event)
        self.counts[(event.rule, event.label, event.type)] += 1
        for out in self.outputs:
            out.publish(event)

    def view(self) -> DecisionsView:
        return DecisionsView(tuple(d.view() for d in self.streams.values()), tuple(self.events),
                             tuple((*key, n) for key, n in sorted(self.counts.items())), self.deliveries())

    def deliveries(self) -> tuple[Delivery, ...]:
        return tuple(out.delivery() for out in self.outputs)

    def close(self) -> list[BaseException]:
        """Every stream finished, then each output closed (each gets its chance); the failures, for the report."""
        failures: list[BaseException] = []
        if self.closed:
            return failures
        self.closed = True
        for decider in list(self.streams.values()):
            decider.finish()
        for closer in [*(o.close for o in self.outputs), *(x.close for x in (self.media, self.segments) if x)]:
            try:
                closer()
            except Exception as exc:  # noqa: BLE001 - reported by the caller; the others still close
                failures.append(exc)
        return failures

    def report(self) -> dict:
        """Segments and events per stream (the newest REPORT_KEEP of each), delivery per output."""
        streams = {name: {"segments": kept.segment_count, "events": kept.event_count,
                          "segment_list": [s.record() for s in kept.segments],
                          "event_list": [e.record() for e in kept.events]}
                   for name, kept in self.kept.items()}
        doc = {"smoothing": self.rules.smoothing.__dict__, "rules": [r.name for r in self.rules.rules],
               "streams": streams, "delivery": [d.__dict__ for d in self.deliveries()]}
        if self.media is not None:
            doc["clips"] = self.media.summary()
        return doc
