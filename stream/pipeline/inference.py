"""Inference stage: mux → cross-stream batch → preprocess → backend → postprocess → results queue.

Each result keeps its stream and its frame; the results queue is FIFO and the mux hands each stream's
frames over in order, so every stream's results reach its sinks in frame order. A stream's end is
passed on after its last result; the queue is closed when every stream has ended.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import cv2

from stream.backends import Backend
from stream.observe.stats import StatsCollector
from stream.pipeline.frames import Classified, Frame, Prediction, StageTimes
from stream.pipeline.mux import StreamEnd, StreamMux
from stream.pipeline.postprocess import top_k
from stream.pipeline.queues import FrameQueue, Stopped
from stream.pipeline.worker import Worker


@dataclass(frozen=True)
class Batching:
    size: int = 1
    timeout_s: float = 0.0  # how long a partly filled batch may wait for more frames
    stale_s: float | None = None  # live frames older than this are dropped before inference


class InferenceThread(Worker):
    def __init__(self, mux: StreamMux, outbox: FrameQueue, preprocess, backend: Backend, categories: list[str],
                 stats: list[StatsCollector], totals: StatsCollector, stop: threading.Event,
                 batching: Batching = Batching(), top: int = 5) -> None:
        super().__init__("inference", stop)
        self.mux, self.outbox = mux, outbox
        self.preprocess, self.backend = preprocess, backend
        self.categories, self.stats, self.totals = categories, stats, totals
        self.batching, self.top = batching, top
        self.undelivered: list[Classified] = []  # classified when the run stopped: the pipeline drains them

    def work(self) -> None:
        # OpenCV's own pool would fight the backend's threads for the same cores.
        cv2.setNumThreads(1)
        b = self.batching
        while True:
            batch = self.mux.take(b.size, b.timeout_s, b.stale_s)
            if batch.frames:
                self._process(batch.frames)
            for end in batch.ended:
                self.outbox.put(end)
            if batch.finished:
                self.outbox.close("end of input")
                return

    def _process(self, frames: list[Frame]) -> None:
        t0 = time.perf_counter()
        inputs = self.preprocess([f.image for f in frames])
        t1 = time.perf_counter()
        logits = self.backend.infer(inputs)
        t2 = time.perf_counter()
        tops = top_k(logits, self.categories, self.top)
        t3 = time.perf_counter()
        times = StageTimes((t1 - t0) * 1000, (t2 - t1) * 1000, (t3 - t2) * 1000, len(frames))
        results = []
        for frame, top in zip(frames, tops, strict=True):
            prediction = Prediction(frame.index, top, times, t3)
            self.stats[frame.stream].inferred(prediction)
            self.totals.inferred(prediction)
            results.append(Classified(frame, prediction))
        for i, item in enumerate(results):
            try:
                self.outbox.put(item)
            except Stopped:  # counted as processed: they must still reach the sinks
                self.undelivered.extend(results[i:])
                raise


__all__ = ["Batching", "InferenceThread", "StreamEnd"]
