"""One run's observation and loop, whichever engine carries its frames.

The session owns what a run is seen by: a collector per stream and one for the run, the snapshot (its rows
and the combined verdict: every stream must keep up) and the UI it feeds (dashboard or status line, and the
web preview). It drives the engine from its own thread (`step`, a fraction of a second at a time), applies
streams that join or leave, asked from any thread (`add`, `remove`), and turns the engine's result into
the run's outcome, with the one rule for what a run's fault is. Engines implement only what differs.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import replace
from typing import Any, Protocol

from stream.errors import NameTaken, NoSuchStream, NotReady, StreamError, Terminated
from stream.interrupts import END_SIGINT, END_SIGTERM, Interrupts
from stream.media.sources import Source, SourceInfo
from stream.media.streams import StreamSpec
from stream.observe.cpu import CpuMeter
from stream.observe.realtime import Target, combine
from stream.observe.stats import SnapshotRow, StatsCollector, StatsSnapshot
from stream.pipeline.capture import ENDED, FAILED
from stream.session.plan import StreamPlan
from stream.session.records import REMOVED, EngineResult, Retired, RunOutcome, StreamLive, StreamOutcome, StreamSlot

UI_EVERY_S = 0.25
STEP_S = 0.1  # the longest the loop goes without looking at interrupts and requests
DEFAULT_TARGET_FPS = 30.0
REMOVED_LISTED = 100  # removed streams a run lists one by one (its report rows); older ones are summed


class Ui(Protocol):
    def update(self, snap: StatsSnapshot) -> None: ...

    def close(self) -> None: ...


class Engine(Protocol):
    name: str

    def add(self, slot: StreamSlot) -> None: ...

    def remove(self, stream_id: int) -> Future: ...

    def live(self, stream_id: int, now: float) -> StreamLive: ...

    def start(self) -> None: ...

    def step(self, timeout_s: float) -> str | None: ...

    def observe(self, snap: StatsSnapshot) -> None: ...

    def finish(self, drain: bool = True, reason: str = "stopped") -> EngineResult: ...

    def forget(self, stream_id: int) -> StreamOutcome | None:
        """A removed stream's final outcome, and the engine lets go of it; None where the engine must keep it."""


class NoUi:
    def update(self, snap: StatsSnapshot) -> None:
        pass

    def close(self) -> None:
        pass


class Session:
    def __init__(self, batch: int, ui: Ui | None = None, device_mb: Callable[[], float | None] = lambda: None,
                 keep_running: bool = False) -> None:
        self.batch, self.ui, self.keep_running = batch, ui or NoUi(), keep_running
        self.totals = StatsCollector(self._fill, 0, self._dropped, device_mb, None,
                                     Target(DEFAULT_TARGET_FPS, False, batch), CpuMeter())
        self.device_mb = device_mb
        self.engine: Engine | None = None
        self.slots: list[StreamSlot] = []
        self._next_id = 0
        self._next_ui = 0.0
        self._requests: queue.SimpleQueue[tuple[Callable[[], Any], Future]] = queue.SimpleQueue()
        self._loop_thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._over = False
        # Streams whose removal has finished (outputs finalised): their names are free again. A stream being
        # removed still holds its name, so a new stream of that name cannot write to its files meanwhile.
        self._gone: set[int] = set()
        self._removals: dict[int, Future] = {}
        self.on_gone: Callable[[str], None] = lambda name: None  # told before the name is free (the web preview)
        self.on_refresh: Callable[[], None] = lambda: None  # on the loop's thread, with each UI update
        self.retired = Retired()  # removed streams beyond the newest REMOVED_LISTED, summed and let go
        self._departed: list[StreamSlot] = []  # removed streams in the order their removal finished
        self._unfrozen: list[StreamSlot] = []  # ... whose collectors are not frozen yet

    # ---- streams

    def add(self, spec: StreamSpec, info: SourceInfo, plan: StreamPlan, source: Source | None = None,
            sinks: list | None = None) -> StreamSlot:
        """Admit a stream: before the run, or while it runs (from any thread: applied by the run's loop, between
        two steps). Returns once its buffer, sinks and capture are in place; a UserError if they cannot be."""
        return self._call(lambda: self._admit(spec, info, plan, source, sinks or []))

    def remove(self, name: str) -> Future:
        """Take a stream out of the run; the Future resolves (to its sinks' summaries) once its outputs are
        finalised and its name is free again. Its report row stays."""
        def start_removal() -> Future:
            if self._over:
                raise NotReady("the run has ended; its streams' outputs are already finalised")
            slot = self._slot(name)
            removal = self._removals.get(slot.id)
            if removal is None:
                finalised = self.engine.remove(slot.id)
                removal = self._removals[slot.id] = Future()
                finalised.add_done_callback(lambda done: self._gone_now(slot, done, removal))
            return removal

        return self._call(start_removal)

    def _gone_now(self, slot: StreamSlot, done: Future, removal: Future) -> None:
        try:
            self.on_gone(slot.name)
            if threading.current_thread() is self._loop_thread:  # viewers see it gone once the caller is told
                self._refresh(force=True)
        finally:
            self._gone.add(slot.id)
            self._departed.append(slot)
            self._unfrozen.append(slot)
            self._removals.pop(slot.id, None)
            if done.exception() is not None:
                removal.set_exception(done.exception())
            else:
                removal.set_result(done.result())

    @property
    def running(self) -> bool:
        """Its loop is under way: streams can join and leave from any thread."""
        return self._loop_thread is not None and not self._over

    def names(self) -> list[str]:
        return [s.name for s in self.slots]

    def present(self) -> list[StreamSlot]:
        """The streams in the run now (an ended one too, until it is removed); safe from any thread."""
        return [s for s in list(self.slots) if s.id not in self._gone]

    def leaving(self, slot: StreamSlot) -> bool:
        """Its removal has begun and its outputs are not finalised yet."""
        return slot.id in self._removals

    def _slot(self, name: str) -> StreamSlot:
        for slot in self.present():
            if slot.name == name:
                return slot
        names = ", ".join(s.name for s in self.present())
        raise NoSuchStream(f"no stream named {name!r} in this run; streams: {names or 'none'}")

    def _admit(self, spec, info, plan, source, sinks) -> StreamSlot:
        if self._over:
            raise NotReady("the run has ended; no stream can join it")
        if any(s.name == spec.name for s in self.present()):
            raise NameTaken(f"a stream named {spec.name!r} is already in this run; give another name")
        stats = StatsCollector(lambda i=self._next_id: self._live(i).queue_fill, plan.buffer,
                               lambda i=self._next_id: sum(self._live(i).drops.values()), self.device_mb, plan.total,
                               Target(plan.target_fps, plan.judge_latency, self.batch, plan.latency_budget_ms))
        slot = StreamSlot(self._next_id, spec, info, plan, stats, source, list(sinks))
        self.engine.add(slot)  # raises before the stream is counted if its outputs cannot open
        self._next_id += 1
        self.slots.append(slot)
        self._retarget()
        return slot

    def _retarget(self) -> None:
        plans = [s.plan for s in self.slots]
        if not plans:
            return
        fastest = max(plans, key=lambda p: p.target_fps)
        total = None if any(p.total is None for p in plans) or self.keep_running else sum(p.total for p in plans)
        self.totals.retarget(sum(p.buffer for p in plans), total,
                             Target(fastest.target_fps, any(p.judge_latency for p in plans), self.batch,
                                    fastest.latency_budget_ms))

    def _call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the loop's thread while the run is under way (the engine is single-threaded), else here."""
        with self._lock:  # against _finish: a request is either served by the loop or run here, never left
            direct = self._loop_thread is None or threading.current_thread() is self._loop_thread
            if not direct:
                future: Future = Future()
                self._requests.put((fn, future))
        return fn() if direct else future.result()

    def _serve_requests(self) -> None:
        while True:
            try:
                fn, future = self._requests.get_nowait()
            except queue.Empty:
                return
            try:
                result = fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                future.set_exception(exc)
            else:
                future.set_result(result)

    # ---- observation

    def _live(self, stream_id: int) -> StreamLive:
        return self.engine.live(stream_id, time.perf_counter())

    def _fill(self) -> int:
        return sum(self._live(s.id).queue_fill for s in self.slots)

    def _dropped(self) -> int:
        return sum(sum(self._live(s.id).drops.values()) for s in self.slots) + self.retired.dropped

    def snapshot(self, now: float | None = None) -> StatsSnapshot:
        now = time.perf_counter() if now is None else now
        snap = self.totals.snapshot(now)
        rows = []
        for slot in self.slots:
            live, stats = self.engine.live(slot.id, now), slot.stats
            if live.state == REMOVED:  # its row lives on in the report; a long service's view holds who is there
                continue
            # A stream that has ended is shown as it was at its end: its rolling windows must not fill with idle
            # time while the others run on (that would turn its verdict).
            ended = live.state in (ENDED, FAILED) and stats.last_rendered_at is not None
            s = stats.snapshot(min(now, stats.last_rendered_at) if ended else now)
            rows.append(SnapshotRow(slot.name, live.state, s, live.drops, live.reconnects, live.stalls,
                                    live.last_frame_age_s, slot.plan.policy))
        snap = snap.with_streams(rows)
        if len(rows) > 1:  # the run's rule, as the report applies it: every stream must keep up
            snap = replace(snap, verdict=combine([(r.name, r.snap.verdict) for r in rows]))
        return snap

    def _refresh(self, force: bool = False) -> None:
        now = time.perf_counter()
        if force or now >= self._next_ui:
            snap = self.snapshot(now)
            self.engine.observe(snap)
            self.on_refresh()
            self.ui.update(snap)
            self._next_ui = now + UI_EVERY_S

    # ---- the run

    def run(self, interrupts: Interrupts | None = None) -> RunOutcome:
        """Start, loop and finish; Ctrl-C and SIGTERM end it as "interrupted". With the CLI's `interrupts` they are
        requests answered between two steps, and further ones while the outputs are finalised are only noted, so a
        second Ctrl-C cannot cut that short; without, KeyboardInterrupt or Terminated."""
        status, end_reason, main_error = "completed", "end of input", None
        with interrupts.deferred() if interrupts else contextlib.nullcontext():
            now = time.perf_counter()
            self.totals.start(now)
            self.engine.start()
            with self._lock:
                self._loop_thread = threading.current_thread()
            try:
                end_reason = self._loop(interrupts.pending if interrupts else lambda: None)
                if interrupts and interrupts.requested:
                    status, end_reason = "interrupted", interrupts.requested
            except Terminated:
                status, end_reason = "interrupted", END_SIGTERM
            except KeyboardInterrupt:
                status, end_reason = "interrupted", END_SIGINT
            except Exception as exc:  # noqa: BLE001 - the loop's own failure (a sink), reported like a worker's
                main_error = exc
            finally:
                outcome = self._finish(status, end_reason, main_error)
        return outcome

    def _loop(self, interrupted: Callable[[], str | None]) -> str:
        while True:
            reason = interrupted()
            if reason:
                return reason
            self._serve_requests()
            self._retire()
            reason = self.engine.step(STEP_S)
            if reason:
                self._refresh(force=True)
                return reason
            self._refresh()

    def _retire(self) -> None:
        """Beyond the newest REMOVED_LISTED removed streams, the oldest are summed into `retired` and let go by the
        session and the engine: a service whose cameras come and go for months keeps a bounded record of them."""
        # Frozen a step after their removal finished: an engine may still replay their last events then (Ray's poll).
        while self._unfrozen:
            self._unfrozen.pop().stats.freeze()
        while len(self._departed) > REMOVED_LISTED:
            slot = self._departed[0]
            outcome = self.engine.forget(slot.id)
            if outcome is None:
                return
            self.retired.add(outcome)
            self._departed.pop(0)
            self.slots.remove(slot)
            self._gone.discard(slot.id)

    def _finish(self, status: str, end_reason: str, main_error: BaseException | None) -> RunOutcome:
        with self._lock:
            self._over, self._loop_thread = True, None
        self._serve_requests()  # a request that came with the stop: refused with a line, never left hanging
        try:
            result = self.engine.finish(drain=main_error is None, reason=end_reason)
        finally:
            with contextlib.suppress(Exception):
                self._refresh(force=True)
            self.ui.close()
        outcome = RunOutcome(status, end_reason, self.totals, result.streams, warnings=list(result.warnings),
                             retired=self.retired)
        error = result.failure or main_error or result.close_error or stream_errors(result.streams)
        if error is not None:
            outcome.status, outcome.error = "error", error
            outcome.end_reason = f"{type(error).__name__}: {error}"
        return outcome


def stream_errors(outcomes: list[StreamOutcome]) -> BaseException | None:
    """The run's fault from its streams: the others ran on, yet a lost stream is reported (exit 3), several in
    one line. A stream taken out of the run on purpose is no fault, whatever state it was in."""
    lost = [o.error for o in outcomes if o.error is not None and o.state != REMOVED]
    if not lost:
        return None
    if len(outcomes) == 1 or not all(isinstance(e, StreamError) for e in lost):
        return lost[0]
    return StreamError(f"{len(lost)} of {len(outcomes)} streams lost: " + "; ".join(str(e) for e in lost))
