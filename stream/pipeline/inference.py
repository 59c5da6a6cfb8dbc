"""Inference stage: mux → cross-stream batch → preprocess → backend → postprocess → results queue.

With host preprocessing the stage is two threads: one takes batches and preprocesses them while the other runs
the model on the batch before (a hand-off of one batch between them), so a CPU backend at batch 1 keeps up
with one intra-op thread fewer (stream.session.plan.model_threads).

Each result keeps its stream and its frame; the results queue is FIFO and the mux hands each stream's
frames over in order, so every stream's results reach its sinks in frame order. A stream's end is
passed on after its last result; the queue is closed when every stream has ended.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

import cv2

from stream.backends import Backend
from stream.frames import Classified, Frame, Prediction, StageTimes
from stream.observe.stats import StatsCollector
from stream.pipeline.mux import StreamEnd, StreamMux
from stream.pipeline.postprocess import top_k
from stream.pipeline.queues import POLL_S, FrameQueue, Stopped
from stream.pipeline.worker import Worker

STOP_JOIN_S = 1.0  # a batch being preprocessed when the stop came: it is finished and classified too
# The other model callers' batches in progress at a stop or an error are finished too, within this (under the engine's
# STAGE_JOIN_S, stream.session.local, which then drains what they classified).
SETTLE_S = 2.5


@dataclass(frozen=True)
class Batching:
    size: int = 1
    timeout_s: float = 0.0  # how long a partly filled batch may wait for more frames
    stale_s: float | None = None  # live frames older than this are dropped before inference


class BatchStage(Worker):
    """What every inference stage shares, wherever its model runs: the mux in, the results out in order,
    each prediction counted once for its stream and the run, and what was classified when a stop came."""

    role = "batching"

    def __init__(self, name: str, mux: StreamMux, outbox: FrameQueue, categories: list[str],
                 stats: Mapping[int, StatsCollector], totals: StatsCollector, stop: threading.Event,
                 batching: Batching, top: int = 5) -> None:
        super().__init__(name, stop)
        self.mux, self.outbox = mux, outbox
        self.categories, self.stats, self.totals = categories, stats, totals
        self.batching, self.top = batching, top
        self.undelivered: list[Classified] = []  # classified when the run stopped: the engine drains them

    @property
    def clocks(self) -> list:
        """The CPU clocks of the stage's threads (stream.observe.cpu)."""
        return [self.cpu]

    def batches(self, size: int, timeout_s: float, process, out: FrameQueue) -> None:
        """Batches from the mux until every stream has ended: each to `process`; a stream's end is passed to `out`
        after its last frame, the run's end last."""
        while True:
            waiting = time.perf_counter()
            batch = self.mux.take(size, timeout_s, self.batching.stale_s)
            self.cpu.waited(waiting)
            if batch.frames:
                process(batch.frames)
            waiting = time.perf_counter()
            for end in batch.ended:
                out.put(end)
            self.cpu.waited(waiting)
            if batch.finished:
                out.close("end of input")
                return

    def predictions(self, frames: list[Frame], tops, times: list[StageTimes], done_at: float) -> list[Classified]:
        results = []
        for frame, top, t in zip(frames, tops, times, strict=True):
            prediction = Prediction(frame.index, top, t, done_at)
            self.stats[frame.stream].inferred(prediction)
            self.totals.inferred(prediction)
            results.append(Classified(frame, prediction))
        return results

    def deliver(self, results: list[Classified], cpu=None) -> bool:
        """Results to the outbox; True (and the rest kept in `undelivered`) once the run has been stopped."""
        waiting = time.perf_counter()
        for i, item in enumerate(results):
            try:
                self.outbox.put(item)
            except Stopped:  # counted as processed: they must still reach the sinks
                self.undelivered.extend(results[i:])
                return True
        (cpu or self.cpu).waited(waiting)
        return False


class InferenceThread(BatchStage):
    """The model in this process: a batch across streams → preprocess → backend → top-k.

    With `overlap`, a second thread (`preprocess`) takes the next batch from the mux and preprocesses it while
    this one runs the model on the previous one: at batch 1 the model then needs only one intra-op thread
    to keep up, and one thread spends less CPU per frame than two (their hand-offs cost). The hand-off holds
    one batch; stream ends travel through it in order, so results and ends still leave in frame order.

    With `calls` > 1 (a runtime whose session takes calls from several threads at once: `parallel_calls`), that
    many threads each run whole batches on one intra-op thread, side by side, and results leave in the order
    the batches were handed over (`_InOrder`). Where the model bounds a run on a busy box, an intra-op pool's
    every operator waits for its slowest thread, which the decoders and encoders keep preempting; calls side by
    side wait for nothing and skip the pool's hand-offs (README: Where the CPU goes)."""

    def __init__(self, mux: StreamMux, outbox: FrameQueue, preprocess, backend: Backend, categories: list[str],
                 stats: Mapping[int, StatsCollector], totals: StatsCollector, stop: threading.Event,
                 batching: Batching = Batching(), top: int = 5, overlap: bool = True, calls: int = 1) -> None:
        super().__init__("inference", mux, outbox, categories, stats, totals, stop, batching, top)
        if calls > 1 and not overlap:
            raise ValueError("model calls side by side take their batches from the preprocessing thread")
        self.preprocess, self.backend = preprocess, backend
        self.feeder = _Preprocessing(self, calls) if overlap else None
        self.callers = [_Caller(self, f"inference-{i + 1}") for i in range(1, calls)]
        self._order = _InOrder(self, calls)

    @property
    def clocks(self) -> list:
        feeder = [] if self.feeder is None else [self.feeder.cpu]
        return [self.cpu, *feeder, *(c.cpu for c in self.callers)]

    def work(self) -> None:
        # OpenCV's own pool would fight the backend's threads for the same cores.
        cv2.setNumThreads(1)
        if self.feeder is None:
            self.batches(self.batching.size, self.batching.timeout_s, self._process, self.outbox)
            return
        self.feeder.start()
        for caller in self.callers:
            caller.start()
        try:
            self.consume(self.cpu)
            for caller in self.callers:  # each leaves after its own end marker, or at a stop or another's error
                caller.join()
            if self.stop.is_set():  # a caller failed: what the others classified still reaches the sinks
                self._settle(time.monotonic() + SETTLE_S)
        except Stopped:
            self._finish_at_stop()
            raise
        except BaseException:  # this thread's own model call failed: the same for the others' results
            self.stop.set()
            self._settle(time.monotonic() + SETTLE_S)
            raise
        finally:
            failed = next((w.error for w in (self.feeder, *self.callers) if w.error is not None), None)
            if failed is not None:
                raise failed

    def _process(self, frames: list[Frame]) -> None:
        cpu = self.cpu
        cpu.lap("batching")
        t0 = time.perf_counter()
        inputs = self.preprocess([f.image for f in frames])
        t1 = time.perf_counter()
        cpu.lap("preprocess")
        if self._order.emit(self._infer(frames, inputs, t1 - t0, cpu), cpu):
            raise Stopped

    def _infer(self, frames: list[Frame], inputs, preprocess_s: float, cpu) -> _Done:
        t1 = time.perf_counter()
        logits = self.backend.infer(inputs)
        t2 = time.perf_counter()
        cpu.lap("inference")
        tops = top_k(logits, self.categories, self.top)
        t3 = time.perf_counter()
        cpu.lap("postprocess")
        return _Done(frames, tops, StageTimes(preprocess_s * 1000, (t2 - t1) * 1000, (t3 - t2) * 1000, len(frames)),
                     t3)

    def consume(self, cpu) -> None:
        """One model caller's loop (this thread's and each `_Caller`'s): hand-offs in, results released in order."""
        while True:
            waiting = time.perf_counter()
            self._order.wait_for_room()
            seq, item = self.feeder.handoff.get()
            self._order.taken(seq)
            cpu.waited(waiting)
            cpu.lap("batching")
            if isinstance(item, _Prepared):
                item = self._infer(item.frames, item.inputs, item.preprocess_s, cpu)
            if self._order.release(seq, item, cpu):
                raise Stopped
            if item is None:  # this caller's end marker
                return

    def _finish_at_stop(self) -> None:
        """Batches taken from the mux and preprocessed when the stop came are classified all the same (the
        engine drains `undelivered` into the sinks): a frame taken from the mux is never lost."""
        deadline = time.monotonic() + SETTLE_S
        self.feeder.join(STOP_JOIN_S)
        left = [*self.feeder.handoff.drain(), *([self.feeder.held] if self.feeder.held is not None else [])]
        try:
            for seq, item in left:
                if isinstance(item, _Prepared):
                    tops = top_k(self.backend.infer(item.inputs), self.categories, self.top)
                    item = _Done(item.frames, tops, StageTimes(item.preprocess_s * 1000, 0.0, 0.0, len(item.frames)),
                                 time.perf_counter())
                self._order.release(seq, item, self.cpu)
        finally:  # a model that fails again here: what the other callers classified still leaves
            self._settle(deadline)

    def _settle(self, deadline: float) -> None:
        """After a stop or an error: the other callers finish their batches, then whatever was classified goes
        to `undelivered` in order, past a batch that failed. A caller still in its model call at the deadline
        keeps the results behind it (they would leave ahead of its own); what it finishes later is not counted."""
        for caller in self.callers:
            caller.join(max(0.0, deadline - time.monotonic()))
        if not any(caller.is_alive() for caller in self.callers):
            self._order.flush(self.cpu)
        self._order.seal()


@dataclass(frozen=True)
class _Prepared:
    frames: list[Frame]
    inputs: object
    preprocess_s: float


@dataclass(frozen=True)
class _Done:
    frames: list[Frame]
    tops: list
    times: StageTimes
    done_at: float


class _InOrder:
    """Whatever the model callers finish, released in the order the preprocessing thread handed it over: each
    stream's frames stay in order, and its end comes after its last result. Counting and delivery happen here,
    one item at a time, so the stats are counted in frame order too. Once the run is stopped, results go to
    the stage's `undelivered`, still in order (the engine drains them into the sinks)."""

    def __init__(self, stage: InferenceThread, calls: int = 1) -> None:
        self.stage, self.calls = stage, calls
        self._lock = threading.Condition()
        self._next = 0  # the next item to emit
        self._taken = 0  # one past the latest item a caller took
        self._ready: dict[int, object] = {}
        self._closed = False
        self._halted = False
        self._sealed = False

    def wait_for_room(self) -> None:
        """Before a caller takes another batch: at most `calls` taken and not yet emitted. Without this the other
        callers would race ahead of a slow call, and their results would sit here, growing stale, instead of
        their frames waiting in the mux, where a live stream drops what has gone stale."""
        with self._lock:
            while self._taken - self._next >= self.calls:
                if self.stage.stop.is_set():
                    raise Stopped
                self._lock.wait(POLL_S)

    def taken(self, seq: int) -> None:
        with self._lock:
            self._taken = max(self._taken, seq + 1)

    def release(self, seq: int, item, cpu) -> bool:
        """`item` is ready; emit it and whatever it unblocks. True once the run has been stopped."""
        with self._lock:
            if self._sealed:
                return True
            self._ready[seq] = item
            while self._next in self._ready:
                self.emit(self._ready.pop(self._next), cpu)
                self._next += 1
            self._lock.notify_all()
            return self._halted

    def flush(self, cpu) -> None:
        """At a stop or an error, once every caller has ended: results behind a batch that never came back."""
        with self._lock:
            for seq in sorted(self._ready):
                self.emit(self._ready.pop(seq), cpu)

    def seal(self) -> None:
        """The engine drains `undelivered` next: nothing is added (or counted) after this."""
        with self._lock:
            self._sealed = True

    def emit(self, item, cpu) -> bool:
        stage = self.stage
        if isinstance(item, _Done):
            results = stage.predictions(item.frames, item.tops, [item.times] * len(item.frames), item.done_at)
            if self._halted or stage.stop.is_set():
                self._halted = True
                stage.undelivered.extend(results)
            else:
                self._halted = stage.deliver(results, cpu)
        elif not self._halted and not (item is None and self._closed):
            try:
                if item is None:  # the run's end: the first caller's marker closes the outbox
                    self._closed = True
                    stage.outbox.close("end of input")
                else:
                    stage.outbox.put(item)
            except Stopped:
                self._halted = True
        return self._halted


class _Caller(Worker):
    """One more thread calling the model, side by side with the inference thread (`InferenceThread.callers`)."""

    role = "batching"

    def __init__(self, stage: InferenceThread, name: str) -> None:
        super().__init__(name, stage.stop)
        self.stage = stage

    def work(self) -> None:
        cv2.setNumThreads(1)
        self.stage.consume(self.cpu)


class _Preprocessing(Worker):
    """The overlapped inference stage's first half: the mux → batches → preprocess → a one-batch hand-off,
    each item numbered in the order it was taken, so that callers side by side can release them in order."""

    role = "preprocess"

    def __init__(self, owner: InferenceThread, calls: int = 1) -> None:
        super().__init__("preprocess", owner.stop)
        self.owner, self.calls = owner, calls
        self.handoff: FrameQueue = FrameQueue(1, owner.stop)
        self.held: tuple[int, _Prepared] | None = None  # preprocessed, but the stop came before it could be handed
        self._seq = 0

    def work(self) -> None:
        cv2.setNumThreads(1)
        owner, cpu = self.owner, self.cpu
        while True:
            waiting = time.perf_counter()
            batch = owner.mux.take(owner.batching.size, owner.batching.timeout_s, owner.batching.stale_s)
            cpu.waited(waiting)
            cpu.lap("batching")
            if batch.frames:
                t0 = time.perf_counter()
                inputs = owner.preprocess([f.image for f in batch.frames])
                prepared = _Prepared(batch.frames, inputs, time.perf_counter() - t0)
                cpu.lap("preprocess")
                self._hand(prepared)
            for end in batch.ended:
                self._hand(end)
            if batch.finished:
                for _ in range(self.calls):  # every caller's own end marker
                    self._hand(None)
                return

    def _hand(self, item) -> None:
        waiting = time.perf_counter()
        numbered = (self._seq, item)
        self._seq += 1
        try:
            self.handoff.put(numbered)
        except Stopped:
            if isinstance(item, _Prepared):
                self.held = numbered
            raise
        self.cpu.waited(waiting)


def local_inference(backend: Backend, preprocess, categories: list[str], batching: Batching, overlap: bool = True,
                    calls: int = 1):
    """The stage factory of a run whose model is in this process (stream.session.local calls it). `overlap`:
    preprocess in a thread of its own (host preprocessing; a GPU's is queued on the device anyway); `calls`:
    model calls side by side (InferenceThread)."""

    def make(mux: StreamMux, outbox: FrameQueue, stats: Mapping[int, StatsCollector], totals: StatsCollector,
             stop: threading.Event) -> InferenceThread:
        return InferenceThread(mux, outbox, preprocess, backend, categories, stats, totals, stop, batching,
                               overlap=overlap, calls=calls)

    return make


__all__ = ["Batching", "BatchStage", "InferenceThread", "StreamEnd", "local_inference"]
