"""Wires the stages for one or many streams: a capture thread per stream → the mux (a small buffer per
stream) → one inference thread batching across streams → results → the render loop → each stream's sinks.

`Pipeline` is started, run in the calling thread (the render loop: OpenCV windows need it) until every
stream has ended, and finished: threads joined, classified frames still in flight drained to their
sinks, every sink closed, whatever stopped the run. One stop Event for every thread; every queue call
and join has a timeout; a worker's exception stops the others and becomes the outcome's error.
Signals are the caller's business (stream.cli): `run()` lets KeyboardInterrupt through.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

from stream.backends import Backend
from stream.errors import StreamError, Terminated
from stream.interrupts import END_SIGINT, END_SIGTERM, Interrupts
from stream.media.sources import Source
from stream.observe.realtime import Target, combine
from stream.observe.stats import StatsCollector, StatsSnapshot, StreamRow
from stream.outputs.sinks import Sink
from stream.pipeline.capture import ENDED, FAILED, CaptureThread, Reconnect
from stream.pipeline.frames import Classified, EndOfStream
from stream.pipeline.inference import Batching, InferenceThread
from stream.pipeline.mux import Lane, StreamEnd, StreamMux
from stream.pipeline.queues import FrameQueue, Stopped
from stream.pipeline.render import Readout, Renderer
from stream.session.plan import StreamPlan

JOIN_TIMEOUT_S = 10.0
UI_EVERY_S = 0.25


class Ui(Protocol):
    def update(self, snap: StatsSnapshot) -> None: ...

    def close(self) -> None: ...


@dataclass
class StreamInput:
    plan: StreamPlan
    source: Source
    sinks: list[Sink]
    reopen: Callable[[], Source] | None = None  # for reconnecting a live source


@dataclass
class StreamOutcome:
    name: str
    stats: StatsCollector
    frames_read: int
    stale_discarded: int
    state: str
    reconnects: int
    stalls: int
    backlog_skipped: int  # buffered by a reconnected source before its first fresh frame, never shown
    drops: dict[str, int]
    error: BaseException | None
    end_reason: str
    source: Source  # the stream's current source: the one it opened last, if it reconnected
    thread_alive: bool = False  # its capture thread missed the join: its source must not be closed under it


@dataclass
class RunOutcome:
    status: str  # completed | interrupted | error
    end_reason: str
    stats: StatsCollector  # the whole run (all streams)
    frames_read: int
    stale_discarded: int = 0  # live frames buffered before the run started, skipped unprocessed
    error: BaseException | None = None
    warnings: list[str] = field(default_factory=list)
    streams: list[StreamOutcome] = field(default_factory=list)


class Pipeline:
    def __init__(self, streams: list[StreamInput], backend: Backend, preprocessor, categories: list[str],
                 renderer: Renderer, ui: Ui, batching: Batching, reconnect: Reconnect = Reconnect()) -> None:
        self.stop_event = threading.Event()
        self.inputs = streams
        self.mux = StreamMux([Lane(s.plan.live, s.plan.buffer) for s in streams], self.stop_event)
        self.results: FrameQueue = FrameQueue(max(2 * batching.size, 4), "block", self.stop_event)
        self.stats = [self._collector(i, s.plan, backend, batching.size) for i, s in enumerate(streams)]
        total = None if any(s.plan.total is None for s in streams) else sum(s.plan.total for s in streams)
        fastest = max(streams, key=lambda s: s.plan.target_fps).plan
        self.totals = StatsCollector(lambda: sum(self.mux.fill(i) for i in range(len(streams))),
                                     sum(s.plan.buffer for s in streams),
                                     lambda: sum(self.mux.dropped(i) for i in range(len(streams))),
                                     backend.device_peak_mb, total,
                                     Target(fastest.target_fps, any(s.plan.judge_latency for s in streams),
                                            batching.size, fastest.latency_budget_ms))
        self.captures = [
            CaptureThread(i, s.source, s.reopen or _no_reopen(s.source), self.mux, [self.stats[i], self.totals],
                          self.stop_event,
                          s.plan.max_frames, s.plan.loop, s.plan.pace_fps, reconnect if s.reopen else Reconnect())
            for i, s in enumerate(streams)]
        self.inference = InferenceThread(self.mux, self.results, preprocessor, backend, categories, self.stats,
                                         self.totals, self.stop_event, batching)
        self.renderer, self.ui = renderer, ui
        self.readouts = [Readout() for _ in streams]
        self.ended: dict[int, str] = {}
        self._next_ui = 0.0
        self._closed = False

    def _collector(self, i: int, plan: StreamPlan, backend: Backend, batch: int) -> StatsCollector:
        return StatsCollector(lambda: self.mux.fill(i), plan.buffer, lambda: self.mux.dropped(i),
                              backend.device_peak_mb, plan.total,
                              Target(plan.target_fps, plan.judge_latency, batch, plan.latency_budget_ms))

    def start(self) -> None:
        now = time.perf_counter()
        self.totals.start(now)
        for stats in self.stats:
            stats.start(now)
        for worker in (*self.captures, self.inference):
            worker.start()

    def run(self, interrupted: Callable[[], str | None] = lambda: None) -> str:
        """The render loop, until every stream has ended or `interrupted()` names a reason; that reason."""
        while True:
            reason = interrupted()
            if reason:
                return reason
            try:
                item = self.results.get(timeout=0.1)
            except queue.Empty:
                item = None
            except Stopped:  # a worker failed; finish() reports its error
                return "stopped by an error"
            if isinstance(item, EndOfStream):
                self._refresh(force=True)
                reasons = set(self.ended.values())
                return reasons.pop() if len(reasons) == 1 else "every stream ended"
            if isinstance(item, StreamEnd):
                self.ended[item.stream] = item.reason
            elif item is not None and not self.show(item):
                return "window closed"
            self._refresh()

    def show(self, item: Classified) -> bool:
        started = time.perf_counter()
        stream = item.frame.stream
        annotated = self.renderer.draw(item, self.readouts[stream])
        keep = [sink.write(item, annotated) for sink in self.inputs[stream].sinks]
        done = time.perf_counter()
        self.stats[stream].rendered(item, (done - started) * 1000, done)
        self.totals.rendered(item, (done - started) * 1000, done)
        return all(keep)

    def snapshot(self, now: float | None = None) -> StatsSnapshot:
        now = time.perf_counter() if now is None else now
        snap = self.totals.snapshot(now)
        rows = []
        for i, (stats, capture) in enumerate(zip(self.stats, self.captures, strict=True)):
            # A stream that has ended is shown as it was at its end: its rolling windows must not fill
            # with idle time while the others run on (that would turn its verdict).
            ended = capture.state in (ENDED, FAILED) and stats.last_rendered_at is not None
            s = stats.snapshot(min(now, stats.last_rendered_at) if ended else now)
            age = None if capture.last_frame_at is None else now - capture.last_frame_at
            rows.append(StreamRow(self.inputs[i].plan.name, capture.status(now), s, self.mux.drops(i),
                                  capture.reconnects, capture.stalls, age))
        snap = snap.with_streams(rows)
        if len(rows) > 1:  # the run's rule, as the report applies it: every stream must keep up
            snap = replace(snap, verdict=combine([(r.name, r.snap.verdict) for r in rows]))
        return snap

    def _refresh(self, force: bool = False) -> None:
        now = time.perf_counter()
        if force or now >= self._next_ui:
            snap = self.snapshot(now)
            for i, row in enumerate(snap.streams):
                self.readouts[i] = Readout(row.snap.fps_1s.pipeline, row.snap.latency_ms["end_to_end"].p50)
            self.ui.update(snap)
            self._next_ui = now + UI_EVERY_S

    def finish(self, status: str, end_reason: str, main_error: BaseException | None = None) -> RunOutcome:
        """Stop every thread, drain what was classified to the sinks, close them all; the outcome."""
        errors = [main_error] if main_error is not None else []
        self.stop_event.set()
        for worker in (*self.captures, self.inference):
            worker.join(JOIN_TIMEOUT_S)
        if not errors:  # a failing sink would only fail again on the drained frames
            _collect(errors, self._drain)
        _collect(errors, self._close)
        outcome = RunOutcome(status, end_reason, self.totals, sum(c.frames_read for c in self.captures),
                             sum(c.stale_discarded for c in self.captures))
        for i, capture in enumerate(self.captures):
            outcome.streams.append(StreamOutcome(
                self.inputs[i].plan.name, self.stats[i], capture.frames_read, capture.stale_discarded,
                capture.status(), capture.reconnects, capture.stalls, capture.backlog_skipped, self.mux.drops(i),
                capture.error or capture.stream_error, capture.end_reason, capture.source, capture.is_alive()))
        lost = [c.stream_error for c in self.captures if c.stream_error is not None]
        failed = next((w.error for w in (*self.captures, self.inference) if w.error is not None), None)
        error = failed or (errors[0] if errors else None)
        if error is None and lost:
            # The other streams ran on; the run still reports the lost one as its fault (exit 3).
            error = lost[0] if len(self.captures) == 1 else StreamError(
                f"{len(lost)} of {len(self.captures)} streams lost: " + "; ".join(str(e) for e in lost))
        if error is not None:
            outcome.status, outcome.error = "error", error
            outcome.end_reason = f"{type(error).__name__}: {error}"
        for worker in (*self.captures, self.inference):
            if worker.is_alive():
                outcome.warnings.append(f"{worker.name} thread did not stop within {JOIN_TIMEOUT_S:.0f} s")
        return outcome

    def _drain(self) -> None:
        """Frames already classified when the run stopped still reach the sinks."""
        for item in [*self.results.drain(), *self.inference.undelivered]:
            if isinstance(item, Classified):
                self.show(item)
        self.mux.discard_unprocessed()  # read, never processed: counted as dropped ("at stop")

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._refresh(force=True)
        failures = []
        closers = [sink.close for s in self.inputs for sink in s.sinks] + [self.ui.close]
        for closer in dict.fromkeys(closers):  # a sink shared by several streams closes once
            try:
                closer()
            except Exception as exc:  # noqa: BLE001 - every sink must get its chance to finalise
                failures.append(exc)
        if failures:
            raise failures[0]


def _no_reopen(source: Source) -> Callable[[], Source]:
    def reopen() -> Source:
        raise StreamError(f"{source.info.uri} cannot be reopened")

    return reopen


def _collect(errors: list[BaseException], fn, *args) -> None:
    try:
        fn(*args)
    except Exception as exc:  # noqa: BLE001 - kept for the report; finalisation goes on
        errors.append(exc)


def execute(pipeline: Pipeline, interrupts: Interrupts | None = None) -> RunOutcome:
    """Start, run and finish a pipeline; Ctrl-C and SIGTERM end it as "interrupted". With the CLI's
    `interrupts` they are requests answered between frames, and further ones while the outputs are
    finalised are only noted, so a second Ctrl-C cannot cut that short; without, KeyboardInterrupt or
    Terminated."""
    status, end_reason, main_error = "completed", "end of input", None
    with interrupts.deferred() if interrupts else contextlib.nullcontext():
        pipeline.start()
        try:
            end_reason = pipeline.run(interrupts.pending if interrupts else lambda: None)
            if interrupts and interrupts.requested:
                status, end_reason = "interrupted", interrupts.requested
        except Terminated:
            status, end_reason = "interrupted", END_SIGTERM
        except KeyboardInterrupt:
            status, end_reason = "interrupted", END_SIGINT
        except Exception as exc:  # noqa: BLE001 - the render loop's own failure, reported like a worker's
            main_error = exc
        finally:
            outcome = pipeline.finish(status, end_reason, main_error)
    return outcome


@dataclass(frozen=True)
class PipelineOptions:
    """One stream's settings, for `run_pipeline`."""

    queue_size: int = 8
    drop_policy: str = "block"
    batch: int = 1
    max_frames: int | None = None
    loop: bool = False
    target_fps: float = 30.0
    pace: bool = False
    latency_budget_ms: float | None = None


def run_pipeline(source: Source, backend: Backend, preprocessor, categories: list[str], renderer: Renderer,
                 sinks: list[Sink], ui: Ui, opts: PipelineOptions) -> RunOutcome:
    """One stream, start to finish, planned as the CLI plans it; the outcome's stats are that stream's."""
    from stream.config import Config
    from stream.media.streams import StreamSpec
    from stream.session.plan import plan_run

    cfg = Config(queue_size=opts.queue_size, drop_policy=opts.drop_policy, batch=opts.batch,
                 max_frames=opts.max_frames, loop=opts.loop, target_fps=opts.target_fps, pace=opts.pace,
                 latency_budget_ms=opts.latency_budget_ms)
    plan = plan_run(cfg, [StreamSpec(source.info.uri, "stream")], [source.info])
    pipeline = Pipeline([StreamInput(plan.streams[0], source, sinks)], backend, preprocessor, categories, renderer,
                        ui, plan.batching)
    outcome = execute(pipeline)
    outcome.stats = outcome.streams[0].stats
    return outcome
