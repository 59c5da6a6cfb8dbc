"""The local engine: a capture thread per stream → the mux (a small buffer per stream) → one batch stage across
streams → results → the render loop (the session's thread: OpenCV windows need it) → each stream's sinks.

Streams join (`add`) and leave (`remove`) while it runs. A stream that ends or leaves has its sinks
finalised by the render loop right after its last frame (the mux reports its end once its buffer is
empty), so its video is playable and its log flushed while the others run on. `finish` stops every thread,
drains what was classified to the sinks and closes them all, whatever stopped the run. One stop Event
for every thread; every queue call and join has a timeout; a worker's exception stops the others and
becomes the result's error. The batch stage is given as a factory: the model in this process
(stream.pipeline.inference.local_inference) or on Ray Serve (stream.cluster.remote_inference).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from stream.decisions.hub import Decisions, StreamDecider
from stream.errors import StreamError
from stream.frames import Classified, EndOfStream
from stream.media.sources import Source
from stream.observe.cpu import CpuMeter, ThreadCpu, born_as
from stream.observe.stats import StatsCollector, StatsSnapshot
from stream.outputs.kinds import Outputs
from stream.outputs.sinks import Sink, VideoFileSink
from stream.pipeline.capture import ENDED, CaptureThread, Reconnect
from stream.pipeline.health import HealthRules
from stream.pipeline.inference import Batching, BatchStage
from stream.pipeline.mux import Lane, StreamEnd, StreamMux
from stream.pipeline.queues import FrameQueue, Stopped
from stream.pipeline.render import Readout, Renderer
from stream.session.records import REMOVED, EngineResult, StreamLive, StreamOutcome, StreamSlot

JOIN_TIMEOUT_S = 10.0
STAGE_JOIN_S = 3.0  # the batch stage's bound to finish its batch at a stop (a batch of 8 takes well under 1 s here)

StageFactory = Callable[..., BatchStage]  # (mux, outbox, stats by stream id, totals, stop) → the batch stage
Opener = Callable[[str], Source]


@dataclass
class _Stream:
    slot: StreamSlot
    capture: CaptureThread
    sinks: list[Sink]
    readout: Readout = field(default_factory=Readout)
    ended: str | None = None  # why, once its last frame went to its sinks and they were closed
    removed: Future | None = None  # resolved once a removed stream's outputs are finalised
    summaries: list = field(default_factory=list)
    source_closed: bool = False
    decider: StreamDecider | None = None  # its steady label, segments and events (stream.decisions)


class LocalEngine:
    name = "local"

    def __init__(self, stage: StageFactory, renderer: Renderer, batching: Batching, totals: StatsCollector,
                 reconnect: Reconnect = Reconnect(), outputs: Outputs | None = None, opener: Opener | None = None,
                 keep_open: bool = False, health: HealthRules | None = None,
                 decisions: Decisions | None = None) -> None:
        self.stop_event = threading.Event()
        self.mux = StreamMux([], self.stop_event, keep_open=True)  # released in start() unless kept open
        self._keep_open = keep_open
        self.results: FrameQueue = FrameQueue(max(2 * batching.size, 4), self.stop_event)
        self.totals, self.reconnect, self.renderer, self.health = totals, reconnect, renderer, health
        self.outputs = outputs or Outputs({})
        self.decisions = decisions
        self.opener = opener
        self.streams: dict[int, _Stream] = {}
        self.collectors: dict[int, StatsCollector] = {}  # read by the batch stage by frame.stream
        self.stage = stage(self.mux, self.results, self.collectors, totals, self.stop_event)
        # The run's CPU by stage (stream.observe.cpu): each thread splits its own clock; this one is the render loop's.
        self.meter = totals.cpu or CpuMeter()
        self.clock = self.meter.track(ThreadCpu("session", "render loop"))
        for clock in self.stage.clocks:
            self.meter.track(clock)
        self.started = False
        self.errors: list[BaseException] = []  # sinks that failed to close at their stream's end
        self._closed = False

    # ---- streams

    def add(self, slot: StreamSlot) -> None:
        """Its buffer, its sinks and its capture thread (started at once in a run under way)."""
        source = slot.source
        if source is None:
            raise ValueError(f"stream {slot.name}: the local engine reads an opened source")
        sinks = [*slot.sinks, *self.outputs.open(slot.name, slot.info, len(self.streams) + 1)]
        live_reopen = self.opener is not None and source.info.live
        reopen = (lambda uri=slot.spec.uri: self.opener(uri)) if live_reopen else _no_reopen(source)
        plan = slot.plan
        capture = CaptureThread(slot.id, source, reopen, self.mux, [slot.stats, self.totals], self.stop_event,
                                plan.max_frames, plan.loop, plan.pace_fps,
                                self.reconnect if live_reopen else Reconnect(), name=slot.name, health=self.health)
        self.collectors[slot.id] = slot.stats
        self.meter.track(capture.cpu)
        self.mux.add(slot.id, Lane(plan.live, plan.buffer))
        decider = self.decisions.open(slot.name) if self.decisions is not None else None
        self.streams[slot.id] = _Stream(slot, capture, sinks, decider=decider)
        if self.started:
            slot.stats.start()
            capture.start()

    def remove(self, stream_id: int) -> Future:
        """Ends one stream: resolved once its outputs are finalised (its last frame shown, its sinks closed)."""
        s = self.streams[stream_id]
        if s.removed is None:
            s.removed = Future()
            s.capture.halt.set()
            self.mux.close(stream_id, REMOVED)
            if s.ended is not None:
                s.removed.set_result(s.summaries)
        return s.removed

    def forget(self, stream_id: int) -> StreamOutcome | None:
        """A removed stream whose outputs are finalised: its outcome, and nothing of it kept here or in the mux; None
        while its capture thread still runs (asked again later)."""
        s = self.streams[stream_id]
        if s.capture.is_alive():  # still in a read: its source, late frames and errors are not settled yet
            return None
        _release_source(s)
        outcome = self._outcome(self.streams.pop(stream_id))
        self.collectors.pop(stream_id, None)
        self.mux.forget(stream_id)
        return outcome

    def live(self, stream_id: int, now: float) -> StreamLive:
        s = self.streams[stream_id]
        c = s.capture
        state = REMOVED if s.removed is not None else c.status(now)
        age = None if c.last_frame_at is None else now - c.last_frame_at
        return StreamLive(state, self.mux.drops(stream_id), c.reconnects, c.stalls, age, self.mux.fill(stream_id))

    # ---- the run

    def start(self) -> None:
        now = time.perf_counter()
        for s in self.streams.values():
            s.slot.stats.start(now)
        self.started = True
        self.clock.bind()
        if not self._keep_open:
            self.mux.release()
        for worker in (*(s.capture for s in self.streams.values()), self.stage):
            worker.start()

    def step(self, timeout_s: float) -> str | None:
        """Show what was classified for up to `timeout_s`; why the run is over, or None while it goes on."""
        deadline = time.perf_counter() + timeout_s
        while True:
            left = deadline - time.perf_counter()
            waiting = time.perf_counter()
            try:
                item = self.results.get(timeout=max(left, 0.0))
            except queue.Empty:
                item = None
            except Stopped:  # a worker failed; finish() reports its error
                return "stopped by an error"
            self.clock.waited(waiting)
            if isinstance(item, EndOfStream):
                reasons = {s.ended for s in self.streams.values()}
                return reasons.pop() if len(reasons) == 1 else "every stream ended"
            if isinstance(item, StreamEnd):
                self._ended(item.stream, item.reason)
            elif item is not None and not self.show(item):
                return "window closed"
            self._reap()
            if item is None or time.perf_counter() >= deadline:
                return None

    def show(self, item: Classified) -> bool:
        started = time.perf_counter()
        s = self.streams[item.frame.stream]
        self.clock.lap("session")
        if s.decider is not None:
            item = s.decider.decide(item)
            self.clock.lap("decisions")
        annotated = self.renderer.draw(item, s.readout)
        self.clock.lap("render")
        keep = [self._write(sink, item, annotated) for sink in s.sinks]
        if s.decider is not None:
            s.decider.rendered(item, annotated)
            self.clock.lap("decisions")
        done = time.perf_counter()
        s.slot.stats.rendered(item, (done - started) * 1000, done)
        self.totals.rendered(item, (done - started) * 1000, done)
        return all(keep)

    def _write(self, sink: Sink, item: Classified, annotated) -> bool:
        if not isinstance(sink, VideoFileSink):
            kept = sink.write(item, annotated)
            self.clock.lap("sinks")
            return kept
        if sink.written:
            kept = sink.write(item, annotated)
        else:
            with born_as("encode"):  # the encoder starts its threads with its first frame
                kept = sink.write(item, annotated)
        self.clock.lap("encode")
        return kept

    def observe(self, snap: StatsSnapshot) -> None:
        """The session's newest snapshot: the rolling readout each stream's frames carry."""
        rows = {row.name: row for row in snap.streams}
        for s in self.streams.values():
            row = rows.get(s.slot.name)
            figures = row.snap if row is not None else snap
            s.readout = Readout(figures.fps_1s.pipeline, figures.latency_ms["end_to_end"].p50)

    def _ended(self, stream_id: int, reason: str) -> None:
        """A stream's last frame went to its sinks: finalise them now, not at the end of the run."""
        s = self.streams[stream_id]
        s.ended = reason
        self.meter.sample()  # its encoder's and decoder's threads end now: their CPU is kept
        _finalise(s, self.errors)

    def _reap(self) -> None:
        """Close the sources of streams whose capture thread has ended (a removed one may take a read to notice)."""
        for s in self.streams.values():
            if s.ended is not None:
                _release_source(s)

    # ---- the end

    def finish(self, drain: bool = True, reason: str = "stopped") -> EngineResult:
        """Stop every thread, drain what was classified to the sinks (unless a sink already failed: it would only
        fail again), close them all.

        The sinks close before the cameras are waited for: a supervisor sends SIGKILL some seconds after SIGTERM
        (10 s by default for systemd's and Docker's), and a camera stuck in a read or a reconnect could hold an
        mp4's index back that long. Only the batch stage feeds the sinks, and it is given STAGE_JOIN_S; what the
        captures still add to the mux is counted as dropped at the stop."""
        self.stop_event.set()
        captures = [s.capture for s in self.streams.values()]
        for c in captures:
            c.halt.set()
        deadline = time.monotonic() + JOIN_TIMEOUT_S  # one deadline for all: a stuck camera costs it once
        _join(self.stage, min(deadline, time.monotonic() + STAGE_JOIN_S))
        errors = list(self.errors)
        self.meter.sample()  # before the sinks and sources close: their native threads' CPU is kept
        if drain and not errors:
            _collect(errors, self._drain)
        _collect(errors, self._finalise_all)
        for c in captures:
            _join(c, deadline)
        self.mux.discard_unprocessed()  # read, never processed: counted as dropped ("at stop")
        _collect(errors, self._close)
        self.clock.end("session")
        self.meter.stop()
        outcomes = [self._outcome(s) for s in self.streams.values()]
        failed = next((w.error for w in (*captures, self.stage) if w.error is not None), None)
        warnings = [f"{w.name} thread did not stop within {JOIN_TIMEOUT_S:.0f} s"
                    for w in (*captures, self.stage) if w.is_alive()]
        return EngineResult(outcomes, failed, errors[0] if errors else None, warnings)

    def _outcome(self, s: _Stream) -> StreamOutcome:
        c = s.capture
        state = REMOVED if s.removed is not None else c.status()
        decode = None
        if state == ENDED and c.end_reason == "end of input":
            decode = c.source.decode_check(c.frames_read)
        skipped = getattr(c.source, "skipped", None)
        warnings = [f"{len(skipped)} image(s) skipped: {skipped[:3]}"] if skipped else []
        return StreamOutcome(s.slot, state, c.frames_read, c.stale_discarded, c.reconnects, c.stalls,
                             c.backlog_skipped, self.mux.drops(s.slot.id), c.error or c.stream_error, c.end_reason,
                             s.summaries, decode, warnings, c.health())

    def _drain(self) -> None:
        """Frames already classified when the run stopped still reach the sinks."""
        for item in [*self.results.drain(), *self.stage.undelivered]:
            if isinstance(item, Classified) and self.streams[item.frame.stream].sinks:
                self.show(item)

    def _finalise_all(self) -> None:
        failures: list[BaseException] = []
        for s in self.streams.values():
            _finalise(s, failures)
        if failures:
            raise failures[0]

    def _close(self) -> None:
        """The sources, last: their sinks are finalised by then (`_finalise_all`) and their captures joined."""
        if self._closed:
            return
        self._closed = True
        for s in self.streams.values():
            _release_source(s)


def _finalise(s: _Stream, failures: list[BaseException]) -> None:
    """Close a stream's sinks (each once), keep their summaries, resolve its removal; failures are collected, so
    every sink gets its chance to finalise. Its decisions end first: their last events and segments are its own."""
    if s.decider is not None:
        try:
            s.decider.finish()
        except Exception as exc:  # noqa: BLE001 - reported by the caller; the sinks still close
            failures.append(exc)
    for sink in dict.fromkeys(s.sinks):
        try:
            s.summaries.append(sink.summary())
            sink.close()
        except Exception as exc:  # noqa: BLE001 - reported by the caller, first failure first
            failures.append(exc)
    s.sinks = s.slot.sinks = []  # a long service must not keep what its departed streams wrote to
    if s.removed is not None and not s.removed.done():
        s.removed.set_result(s.summaries)


def _release_source(s: _Stream) -> None:
    """Close its source (and the one it reconnected to) once its capture thread is done with them; one that missed
    its join may still be reading, and keeps them."""
    if s.source_closed or s.capture.is_alive():
        return
    s.source_closed = True
    for source in dict.fromkeys([s.slot.source, s.capture.source]):
        if source is not None:
            source.close()


def _no_reopen(source: Source) -> Callable[[], Source]:
    def reopen() -> Source:
        raise StreamError(f"{source.info.uri} cannot be reopened")

    return reopen


def _join(worker, deadline: float) -> None:
    if worker.ident is not None:  # a run that failed before it started has threads never started
        worker.join(max(deadline - time.monotonic(), 0.0))


def _collect(errors: list[BaseException], fn, *args) -> None:
    try:
        fn(*args)
    except Exception as exc:  # noqa: BLE001 - kept for the report; finalisation goes on
        errors.append(exc)


