"""Inference stage: mux → cross-stream batch → preprocess → backend → postprocess → results queue.

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
    """The model in this process: a batch across streams → preprocess → backend → top-k."""

    def __init__(self, mux: StreamMux, outbox: FrameQueue, preprocess, backend: Backend, categories: list[str],
                 stats: Mapping[int, StatsCollector], totals: StatsCollector, stop: threading.Event,
                 batching: Batching = Batching(), top: int = 5) -> None:
        super().__init__("inference", mux, outbox, categories, stats, totals, stop, batching, top)
        self.preprocess, self.backend = preprocess, backend

    def work(self) -> None:
        # OpenCV's own pool would fight the backend's threads for the same cores.
        cv2.setNumThreads(1)
        self.batches(self.batching.size, self.batching.timeout_s, self._process, self.outbox)

    def _process(self, frames: list[Frame]) -> None:
        cpu = self.cpu
        cpu.lap("batching")
        t0 = time.perf_counter()
        inputs = self.preprocess([f.image for f in frames])
        t1 = time.perf_counter()
        cpu.lap("preprocess")
        logits = self.backend.infer(inputs)
        t2 = time.perf_counter()
        cpu.lap("inference")
        tops = top_k(logits, self.categories, self.top)
        t3 = time.perf_counter()
        cpu.lap("postprocess")
        times = StageTimes((t1 - t0) * 1000, (t2 - t1) * 1000, (t3 - t2) * 1000, len(frames))
        self.deliver(self.predictions(frames, tops, [times] * len(frames), t3))


def local_inference(backend: Backend, preprocess, categories: list[str], batching: Batching):
    """The stage factory of a run whose model is in this process (stream.session.local calls it)."""

    def make(mux: StreamMux, outbox: FrameQueue, stats: Mapping[int, StatsCollector], totals: StatsCollector,
             stop: threading.Event) -> InferenceThread:
        return InferenceThread(mux, outbox, preprocess, backend, categories, stats, totals, stop, batching)

    return make


__all__ = ["Batching", "BatchStage", "InferenceThread", "StreamEnd", "local_inference"]
