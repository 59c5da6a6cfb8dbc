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
from stream.pipeline.queues import FrameQueue, Stopped
from stream.pipeline.worker import Worker

STOP_JOIN_S = 1.0  # a batch being preprocessed when the stop came: it is finished and classified too


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

    def deliver(self, results: list[Classified]) -> None:
        waiting = time.perf_counter()
        for i, item in enumerate(results):
            try:
                self.outbox.put(item)
            except Stopped:  # counted as processed: they must still reach the sinks
                self.undelivered.extend(results[i:])
                raise
        self.cpu.waited(waiting)


class InferenceThread(BatchStage):
    """The model in this process: a batch across streams → preprocess → backend → top-k.

    With `overlap`, a second thread (`preprocess`) takes the next batch from the mux and preprocesses it while
    this one runs the model on the previous one: at batch 1 the model then needs only one intra-op thread
    to keep up, and one thread spends less CPU per frame than two (their hand-offs cost). The hand-off holds
    one batch; stream ends travel through it in order, so results and ends still leave in frame order."""

    def __init__(self, mux: StreamMux, outbox: FrameQueue, preprocess, backend: Backend, categories: list[str],
                 stats: Mapping[int, StatsCollector], totals: StatsCollector, stop: threading.Event,
                 batching: Batching = Batching(), top: int = 5, overlap: bool = True) -> None:
        super().__init__("inference", mux, outbox, categories, stats, totals, stop, batching, top)
        self.preprocess, self.backend = preprocess, backend
        self.feeder = _Preprocessing(self) if overlap else None

    @property
    def clocks(self) -> list:
        return [self.cpu] if self.feeder is None else [self.cpu, self.feeder.cpu]

    def work(self) -> None:
        # OpenCV's own pool would fight the backend's threads for the same cores.
        cv2.setNumThreads(1)
        if self.feeder is None:
            self.batches(self.batching.size, self.batching.timeout_s, self._process, self.outbox)
            return
        self.feeder.start()
        try:
            self._consume()
        except Stopped:
            self._finish_at_stop()
            raise
        finally:
            if self.feeder.error is not None:
                raise self.feeder.error

    def _process(self, frames: list[Frame]) -> None:
        cpu = self.cpu
        cpu.lap("batching")
        t0 = time.perf_counter()
        inputs = self.preprocess([f.image for f in frames])
        t1 = time.perf_counter()
        cpu.lap("preprocess")
        self._infer(frames, inputs, t1 - t0)

    def _infer(self, frames: list[Frame], inputs, preprocess_s: float) -> None:
        cpu = self.cpu
        t1 = time.perf_counter()
        logits = self.backend.infer(inputs)
        t2 = time.perf_counter()
        cpu.lap("inference")
        tops = top_k(logits, self.categories, self.top)
        t3 = time.perf_counter()
        cpu.lap("postprocess")
        times = StageTimes(preprocess_s * 1000, (t2 - t1) * 1000, (t3 - t2) * 1000, len(frames))
        self.deliver(self.predictions(frames, tops, [times] * len(frames), t3))

    def _consume(self) -> None:
        while True:
            waiting = time.perf_counter()
            item = self.feeder.handoff.get()
            self.cpu.waited(waiting)
            self.cpu.lap("batching")
            if isinstance(item, _Prepared):
                self._infer(item.frames, item.inputs, item.preprocess_s)
            elif isinstance(item, StreamEnd):
                self.outbox.put(item)
            else:  # the run's end
                self.outbox.close("end of input")
                return

    def _finish_at_stop(self) -> None:
        """Batches taken from the mux and preprocessed when the stop came are classified all the same (the
        engine drains `undelivered` into the sinks): a frame taken from the mux is never lost."""
        self.feeder.join(STOP_JOIN_S)
        left = [*self.feeder.handoff.drain(), *([self.feeder.held] if self.feeder.held is not None else [])]
        for item in left:
            if isinstance(item, _Prepared):
                logits = self.backend.infer(item.inputs)
                tops = top_k(logits, self.categories, self.top)
                times = StageTimes(item.preprocess_s * 1000, 0.0, 0.0, len(item.frames))
                self.undelivered.extend(self.predictions(item.frames, tops, [times] * len(item.frames),
                                                         time.perf_counter()))


@dataclass(frozen=True)
class _Prepared:
    frames: list[Frame]
    inputs: object
    preprocess_s: float


class _Preprocessing(Worker):
    """The overlapped inference stage's first half: the mux → batches → preprocess → a one-batch hand-off."""

    role = "preprocess"

    def __init__(self, owner: InferenceThread) -> None:
        super().__init__("preprocess", owner.stop)
        self.owner = owner
        self.handoff: FrameQueue = FrameQueue(1, owner.stop)
        self.held: _Prepared | None = None  # preprocessed, but the stop came before it could be handed over

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
                self._hand(None)
                return

    def _hand(self, item) -> None:
        waiting = time.perf_counter()
        try:
            self.handoff.put(item)
        except Stopped:
            if isinstance(item, _Prepared):
                self.held = item
            raise
        self.cpu.waited(waiting)


def local_inference(backend: Backend, preprocess, categories: list[str], batching: Batching, overlap: bool = True):
    """The stage factory of a run whose model is in this process (stream.session.local calls it). `overlap`:
    preprocess in a thread of its own (host preprocessing; a GPU's is queued on the device anyway)."""

    def make(mux: StreamMux, outbox: FrameQueue, stats: Mapping[int, StatsCollector], totals: StatsCollector,
             stop: threading.Event) -> InferenceThread:
        return InferenceThread(mux, outbox, preprocess, backend, categories, stats, totals, stop, batching,
                               overlap=overlap)

    return make


__all__ = ["Batching", "BatchStage", "InferenceThread", "StreamEnd", "local_inference"]
