"""Inference stage: queue → micro-batch → preprocess → backend → postprocess → results queue."""

from __future__ import annotations

import queue
import threading
import time

import cv2

from stream.backends import Backend
from stream.frames import Classified, EndOfStream, Frame, Prediction, StageTimes
from stream.postprocess import top_k
from stream.preprocess import Preprocessor
from stream.queues import FrameQueue
from stream.stats import StatsCollector
from stream.worker import Worker


class InferenceThread(Worker):
    def __init__(self, inbox: FrameQueue[Frame], outbox: FrameQueue[Classified], preprocess: Preprocessor,
                 backend: Backend, categories: list[str], stats: StatsCollector, stop: threading.Event,
                 batch: int = 1, batch_wait_s: float = 0.0, top: int = 5) -> None:
        super().__init__("inference", stop)
        self.inbox, self.outbox = inbox, outbox
        self.preprocess, self.backend = preprocess, backend
        self.categories, self.stats = categories, stats
        self.batch, self.batch_wait_s, self.top = batch, batch_wait_s, top

    def work(self) -> None:
        # OpenCV's own pool would fight the backend's threads for the same cores.
        cv2.setNumThreads(1)
        while True:
            frames, end = self._gather()
            if frames:
                self._process(frames)
            if end is not None:
                self.outbox.close(end.reason)
                return

    def _gather(self) -> tuple[list[Frame], EndOfStream | None]:
        first = self.inbox.get()
        if isinstance(first, EndOfStream):
            return [], first
        frames = [first]
        while len(frames) < self.batch:
            try:
                item = self.inbox.get(timeout=self.batch_wait_s)
            except queue.Empty:
                break
            if isinstance(item, EndOfStream):
                return frames, item
            frames.append(item)
        return frames, None

    def _process(self, frames: list[Frame]) -> None:
        t0 = time.perf_counter()
        batch = self.preprocess([f.image for f in frames])
        t1 = time.perf_counter()
        logits = self.backend.infer(batch)
        t2 = time.perf_counter()
        tops = top_k(logits, self.categories, self.top)
        t3 = time.perf_counter()
        times = StageTimes((t1 - t0) * 1000, (t2 - t1) * 1000, (t3 - t2) * 1000, len(frames))
        for frame, top in zip(frames, tops, strict=True):
            prediction = Prediction(frame.index, top, times, t3)
            self.stats.inferred(prediction)
            self.outbox.put(Classified(frame, prediction))
