"""Wires the stages: capture thread → bounded queue → inference thread → render loop → sinks.

One stop Event for every thread; every queue call and join has a timeout; a worker's exception
stops the others and is re-raised by the caller. Whatever ends the run, sinks are closed in a
`finally`, so the output video and the predictions log hold every frame processed.
"""

from __future__ import annotations

import queue
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

from stream.backends import Backend
from stream.capture import CaptureThread
from stream.frames import Classified, EndOfStream
from stream.inference import InferenceThread
from stream.preprocess import Preprocessor
from stream.queues import FrameQueue, Stopped
from stream.realtime import Target
from stream.render import Readout, Renderer
from stream.sinks import Sink
from stream.sources import Source
from stream.stats import StatsCollector, StatsSnapshot

JOIN_TIMEOUT_S = 10.0
END_SIGTERM, END_SIGINT = "SIGTERM", "Ctrl-C (SIGINT)"
UI_EVERY_S = 0.25


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C."""


class Ui(Protocol):
    def update(self, snap: StatsSnapshot) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class PipelineOptions:
    queue_size: int = 8
    drop_policy: str = "block"
    batch: int = 1
    max_frames: int | None = None
    loop: bool = False
    target_fps: float = 30.0
    pace: bool = False
    latency_budget_ms: float | None = None  # None: the realtime rule's default


@dataclass
class RunOutcome:
    status: str  # completed | interrupted | error
    end_reason: str
    stats: StatsCollector
    frames_read: int
    stale_discarded: int = 0  # live frames buffered before the run started, skipped unprocessed
    error: BaseException | None = None
    warnings: list[str] = field(default_factory=list)


def run_pipeline(source: Source, backend: Backend, preprocessor: Preprocessor, categories: list[str],
                 renderer: Renderer, sinks: list[Sink], ui: Ui, opts: PipelineOptions) -> RunOutcome:
    stop = threading.Event()
    frames = FrameQueue(opts.queue_size, opts.drop_policy, stop)
    results: FrameQueue[Classified] = FrameQueue(max(2 * opts.batch, 4), "block", stop)
    total = None if opts.loop or source.info.live else source.info.frame_count
    if total is not None and opts.max_frames is not None:
        total = min(total, opts.max_frames)
    # Latency means something only where frames arrive in real time.
    target = Target(opts.target_fps, judge_latency=source.info.live or opts.pace, batch=opts.batch,
                    budget_ms=opts.latency_budget_ms)
    stats = StatsCollector(frames.qsize, opts.queue_size, lambda: frames.dropped, backend.cuda_peak_mb, total, target)
    # Live sources must not wait for a full batch: take what is queued now.
    batch_wait = 0.0 if opts.drop_policy == "latest" else 0.05
    pace_fps = (source.info.fps or 30.0) if opts.pace and not source.info.live else None
    capture = CaptureThread(source, frames, stats, stop, opts.max_frames, opts.loop, pace_fps)
    inference = InferenceThread(frames, results, preprocessor, backend, categories, stats, stop,
                                opts.batch, batch_wait)
    loop = _RenderLoop(renderer, sinks, stats, ui)
    stats.start()
    capture.start()
    inference.start()
    status, end_reason = "completed", "end of input"
    main_errors: list[BaseException] = []  # the render loop's and the sinks' own failures
    try:
        end_reason = loop.run(results)
    except Terminated:
        status, end_reason = "interrupted", END_SIGTERM
    except KeyboardInterrupt:
        status, end_reason = "interrupted", END_SIGINT
    except Exception as exc:  # noqa: BLE001 - reported like a worker's error, after finalisation
        main_errors.append(exc)
    finally:
        # A second Ctrl-C must not cut the finalisation short.
        previous = _ignore_signals()
        try:
            stop.set()
            for worker in (capture, inference):
                worker.join(JOIN_TIMEOUT_S)
            if not main_errors:  # a failing sink would only fail again on the drained frames
                _collect(main_errors, loop.drain, results)
            _collect(main_errors, loop.close)
        finally:
            _restore_signals(previous)
    outcome = RunOutcome(status, end_reason, stats, capture.frames_read, capture.stale_discarded)
    error = capture.error or inference.error or (main_errors[0] if main_errors else None) or capture.stream_error
    if error is not None:
        outcome.status, outcome.error = "error", error
        outcome.end_reason = f"{type(error).__name__}: {error}"
    for worker in (capture, inference):
        if worker.is_alive():
            outcome.warnings.append(f"{worker.name} thread did not stop within {JOIN_TIMEOUT_S:.0f} s")
    return outcome


class _RenderLoop:
    def __init__(self, renderer: Renderer, sinks: list[Sink], stats: StatsCollector, ui: Ui) -> None:
        self.renderer, self.sinks, self.stats, self.ui = renderer, sinks, stats, ui
        self.readout = Readout()
        self._next_ui = 0.0
        self._closed = False

    def run(self, results: FrameQueue[Classified]) -> str:
        while True:
            try:
                item = results.get(timeout=0.1)
            except queue.Empty:
                item = None
            except Stopped:  # a worker failed; the caller reports its error
                return "stopped by an error"
            if isinstance(item, EndOfStream):
                self._refresh(force=True)
                return item.reason
            if item is not None and not self.show(item):
                return "window closed"
            self._refresh()

    def show(self, item: Classified) -> bool:
        started = time.perf_counter()
        annotated = self.renderer.draw(item, self.readout)
        keep = [sink.write(item, annotated) for sink in self.sinks]
        done = time.perf_counter()
        self.stats.rendered(item, (done - started) * 1000, done)
        return all(keep)

    def _refresh(self, force: bool = False) -> None:
        now = time.perf_counter()
        if force or now >= self._next_ui:
            snap = self.stats.snapshot(now)
            self.readout = Readout(snap.fps_1s.pipeline, snap.latency_ms["end_to_end"].p50)
            self.ui.update(snap)
            self._next_ui = now + UI_EVERY_S

    def drain(self, results: FrameQueue[Classified]) -> None:
        """Frames already classified when the run stopped still reach the sinks."""
        for item in results.drain():
            self.show(item)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._refresh(force=True)
        errors = []
        for closer in [sink.close for sink in self.sinks] + [self.ui.close]:
            try:
                closer()
            except Exception as exc:  # noqa: BLE001 - every sink must get its chance to finalise
                errors.append(exc)
        if errors:
            raise errors[0]


def _collect(errors: list[BaseException], fn, *args) -> None:
    try:
        fn(*args)
    except Exception as exc:  # noqa: BLE001 - kept for the report; finalisation goes on
        errors.append(exc)


def _ignore_signals():
    if threading.current_thread() is not threading.main_thread():
        return None
    return {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}


def _restore_signals(previous) -> None:
    for sig, handler in (previous or {}).items():
        signal.signal(sig, handler)
