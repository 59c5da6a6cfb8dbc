"""The stream side of inference on Ray: crop to uint8 → request to the Serve deployment → results in order.

It takes the place of the local engine's inference thread in the stream's own pipeline. A sender takes
what frames the mux has ready (at most `chunk`: a live stream sends each frame as it comes), crops
them to the model's input as whole 8-bit values (the local preprocessing, stopped before its
normalisation, which the replica applies), and sends them as one request; a bounded queue of requests
in flight is the backpressure: when it is full the sender waits,
the mux fills, and a file's capture waits for room as it does locally. A receiver takes the replies
oldest first, so results reach the sinks in frame order. A request whose replica died is sent again
(Serve starts a new replica), so a file loses no frame.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np
import ray

from models.spec import PreprocessSpec
from stream.cluster.wire import BatchTally, ModelInput, Reply
from stream.frames import Classified, EndOfStream, Frame, StageTimes
from stream.observe.stats import StatsCollector
from stream.pipeline.inference import Batching, BatchStage
from stream.pipeline.mux import StreamEnd, StreamMux
from stream.pipeline.postprocess import top_k
from stream.pipeline.preprocess import FastPreprocessor, Preprocessor
from stream.pipeline.queues import FrameQueue, Stopped
from stream.pipeline.worker import Worker

RETRY_WINDOW_S = 120.0  # how long a request is sent again while its replicas are down (Serve restarts them)
REPLY_TIMEOUT_S = 120.0
REPLICA_GONE = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)


class Uint8Crop:
    """The model's input as whole 8-bit values, CHW in the model's channel order: the local preprocessing
    without its final `* scale + shift` (both the faithful and the fast path round to whole values before it)."""

    def __init__(self, spec: PreprocessSpec, resize: str) -> None:
        self._faithful = Preprocessor(spec) if resize == "faithful" else None
        self._fast = FastPreprocessor(spec) if resize != "faithful" else None
        self.crop = spec.crop

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if self._fast is not None:
            return np.ascontiguousarray(self._fast.planar(self._fast.crop(image)))
        planar = np.empty((3, self.crop, self.crop), np.float32)
        self._faithful.whole_values(image, planar)
        return planar.astype(np.uint8)


@dataclass
class InFlight:
    frames: list[Frame]
    pixels: np.ndarray  # N×3×H×W uint8, kept to send again if its replica dies
    crop_ms: list[float]
    response: object  # ray.serve.handle.DeploymentResponse


class RemoteInference(BatchStage):
    def __init__(self, mux: StreamMux, outbox: FrameQueue, crop: Uint8Crop, handle, stream_name: str,
                 categories: list[str], stats: Mapping[int, StatsCollector], totals: StatsCollector,
                 stop: threading.Event, batching: Batching, in_flight: int, chunk: int = 1, top: int = 5) -> None:
        super().__init__("requests", mux, outbox, categories, stats, totals, stop, batching, top)
        self.crop, self.handle, self.stream_name, self.chunk = crop, handle, stream_name, chunk
        self.in_flight: FrameQueue = FrameQueue(in_flight, stop)
        self.tally = BatchTally()
        self.tally_lock = threading.Lock()
        self.retried = 0
        self._held: InFlight | None = None  # sent, but not yet queued when a stop came
        self.receiver = _Receiver(self, stop)

    def work(self) -> None:
        cv2.setNumThreads(1)  # OpenCV's own pool would fight the replica and the encoder for the cores
        self.receiver.start()
        try:
            self.batches(self.chunk, 0.0, self._send, self.in_flight)
        except BaseException:
            self.stop.set()  # the receiver ends on a stop or on the end marker: never leave it waiting
            raise
        finally:
            # Whatever stopped the sender, replies already on their way are still collected.
            while self.receiver.is_alive():
                self.receiver.join(0.1)
            if self.receiver.error is not None:
                raise self.receiver.error
            if self._held is not None:  # sent when the stop came: the newest, so the last to be shown
                self.undelivered.extend(self.classified(self._held))

    def _send(self, frames: list[Frame]) -> None:
        pixels, crop_ms = np.empty((len(frames), 3, self.crop.crop, self.crop.crop), np.uint8), []
        for i, frame in enumerate(frames):
            t0 = time.perf_counter()
            pixels[i] = self.crop(frame.image)
            crop_ms.append((time.perf_counter() - t0) * 1000)
        self._held = InFlight(frames, pixels, crop_ms, self._request(pixels))
        self.in_flight.put(self._held)
        self._held = None

    def _request(self, pixels: np.ndarray):
        return self.handle.classify.remote(ModelInput(self.stream_name, pixels))

    def reply(self, item: InFlight) -> Reply:
        deadline = time.monotonic() + RETRY_WINDOW_S
        while True:
            try:
                return item.response.result(timeout_s=REPLY_TIMEOUT_S)
            except REPLICA_GONE:
                if time.monotonic() >= deadline:
                    raise
                self.retried += 1
                time.sleep(0.2)  # let Serve notice the death before the request is routed again
                item.response = self._request(item.pixels)

    def classified(self, item: InFlight) -> list[Classified]:
        reply = self.reply(item)
        t0 = time.perf_counter()
        tops = top_k(reply.logits, self.categories, self.top)
        done = time.perf_counter()
        with self.tally_lock:
            self.tally.add(reply)
        post_ms = (done - t0) * 1000
        times = [StageTimes(crop_ms, reply.model_ms, post_ms, reply.batch_size) for crop_ms in item.crop_ms]
        return self.predictions(item.frames, tops, times, done)

    def drain_tally(self) -> BatchTally:
        with self.tally_lock:
            tally, self.tally = self.tally, BatchTally()
        return tally


def remote_inference(crop: Uint8Crop, handle, stream_name: str, categories: list[str], batching: Batching,
                     in_flight: int, chunk: int):
    """The stage factory of a stream actor's local engine: its model is the Serve deployment."""

    def make(mux: StreamMux, outbox: FrameQueue, stats: Mapping[int, StatsCollector], totals: StatsCollector,
             stop: threading.Event) -> RemoteInference:
        return RemoteInference(mux, outbox, crop, handle, stream_name, categories, stats, totals, stop, batching,
                               in_flight, chunk)

    return make


class _Receiver(Worker):
    def __init__(self, owner: RemoteInference, stop: threading.Event) -> None:
        super().__init__("replies", stop)
        self.owner = owner

    def work(self) -> None:
        owner = self.owner
        try:
            while True:
                item = owner.in_flight.get()
                if isinstance(item, EndOfStream):
                    owner.outbox.close(item.reason)
                    return
                if isinstance(item, StreamEnd):
                    owner.outbox.put(item)
                    continue
                if owner.deliver(owner.classified(item)):
                    raise Stopped
        except Stopped:
            # Stopped: requests already sent are still answered and reach the sinks (the pipeline drains
            # `undelivered`), as a local batch in progress is finished.
            for item in owner.in_flight.drain():
                if isinstance(item, InFlight):
                    owner.undelivered.extend(owner.classified(item))
