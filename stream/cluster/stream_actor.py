"""Each stream as a Ray actor: the local engine's pipeline for one stream, next to its source.

Capture, the stream's buffer (live/file policies, staleness), reconnects and stall handling, render
and sinks are the local engine's own (stream.session.local); only its inference stage is replaced, by
requests to the Serve deployment (stream.cluster.remote_inference). The actor is threaded: `run`
holds one thread for the whole stream, while the driver calls `poll` and `stop` on others.

A live stream's actor is restarted by Ray if it dies (`max_restarts`; `max_task_retries` sends its
`run` again) and reconnects; the restarted actor writes to files of its own (`name.restart1.mp4`),
since the dead one's could not be finalised. A file stream is not restarted: it would read the file
from its start again and count frames twice; its death is reported as that stream's error.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import ray
from ray import serve

from stream.cluster.deployment import DEPLOYMENT
from stream.cluster.ledger import ledger
from stream.cluster.recording import RecordingCollector
from stream.cluster.remote_inference import RemoteInference, Uint8Crop
from stream.cluster.wire import BatchTally, ModelCard, StreamPoll, StreamResult, StreamStatus
from stream.observe.stats import StatsCollector
from stream.outputs.sinks import Outputs, open_sinks
from stream.pipeline.capture import Reconnect
from stream.pipeline.inference import Batching
from stream.pipeline.render import Renderer
from stream.session.local import Pipeline, StreamInput, StreamPlan


@dataclass(frozen=True)
class StreamJob:
    name: str
    uri: str
    plan: StreamPlan
    batching: Batching
    reconnect: Reconnect
    in_flight: int  # requests this stream may have at the replicas at once
    chunk: int  # frames a request may carry, when the stream has them ready
    video: str | None  # this stream's own output paths, already resolved
    predictions: str | None
    codec: str
    resize: str
    card: ModelCard
    app: str  # the Serve application holding the classifier
    ledger: str


class _NoDevice:
    """The pipeline's collectors ask the backend for accelerator memory; the model is elsewhere."""

    @staticmethod
    def device_peak_mb() -> None:
        return None


class _NoUi:
    def update(self, snap) -> None:
        pass

    def close(self) -> None:
        pass


class StreamPipeline(Pipeline):
    """One stream's local pipeline whose collectors record for the driver and whose model is remote."""

    def __init__(self, job: StreamJob, stream: StreamInput, handle) -> None:
        categories = list(job.card.model.categories)
        super().__init__([stream], _NoDevice(), None, categories, Renderer(job.card.model.random_weights), _NoUi(),
                         job.batching, job.reconnect)
        self.inference = RemoteInference(self.mux, self.results, Uint8Crop(job.card.model.preprocess, job.resize),
                                         handle, job.name, categories, self.stats, self.totals, self.stop_event,
                                         job.batching, job.in_flight, job.chunk)

    def _collector(self, i: int, plan: StreamPlan, backend, batch: int) -> StatsCollector:
        base = super()._collector(i, plan, backend, batch)
        return RecordingCollector(base._queue_fill, base._queue_size, base._dropped, base._device_mb,
                                  base.total_frames, base.target)


def restart_path(path: str | None, incarnation: int) -> str | None:
    if path is None or incarnation == 0:
        return path
    p = Path(path)
    return str(p.with_name(f"{p.stem}.restart{incarnation}{p.suffix}"))


@ray.remote(max_concurrency=4)
class StreamActor:
    def __init__(self, job: StreamJob) -> None:
        self.job = job
        self.incarnation = ray.get(ledger(job.ledger).stream_started.remote(job.name))
        self.node = ray.get_runtime_context().get_node_id()
        self.pipeline: StreamPipeline | None = None
        self._stop_reason: str | None = None
        self._lock = threading.Lock()

    def clock(self) -> float:
        return time.perf_counter()

    def stop(self, reason: str) -> None:
        self._stop_reason = reason

    def run(self) -> StreamResult:
        from stream.session.orchestrator import _open

        job = self.job
        source = _open(job.uri)
        reopen = (lambda: _open(job.uri)) if source.info.live else None
        outputs = Outputs(restart_path(job.video, self.incarnation), restart_path(job.predictions, self.incarnation),
                          False, job.codec)
        try:
            sinks = open_sinks(outputs, [job.name], [source.info])[0]
            handle = serve.get_deployment_handle(DEPLOYMENT, app_name=job.app)
            with self._lock:
                self.pipeline = StreamPipeline(job, StreamInput(job.plan, source, sinks, reopen), handle)
            outcome = self._execute(self.pipeline)
            stream = outcome.streams[0]
            check = stream.source.decode_check(stream.frames_read) if outcome.status == "completed" else None
        finally:
            capture = self.pipeline.captures[0] if self.pipeline else None
            if capture is None or not capture.is_alive():  # a capture thread that missed its join may still read
                source.close()
                if capture is not None and capture.source is not source:
                    capture.source.close()  # the one it reconnected to
        return StreamResult(self.poll(), outcome.end_reason, outcome.error, [s.summary() for s in sinks],
                            check, outcome.warnings)

    def _execute(self, pipeline: StreamPipeline):
        status, end_reason, error = "completed", "end of input", None
        pipeline.start()
        try:
            end_reason = pipeline.run(lambda: self._stop_reason)
            if self._stop_reason:
                status = "interrupted"
        except Exception as exc:  # noqa: BLE001 - the render loop's own failure, reported like a stage's
            error = exc
        return pipeline.finish(status, end_reason, error)

    def poll(self) -> StreamPoll:
        now = time.perf_counter()
        with self._lock:
            pipeline = self.pipeline
        if pipeline is None:
            status = StreamStatus(self.incarnation, self.node, "connecting", None, now, 0, 0, 0, 0, 0,
                                  {"full": 0, "stale": 0, "at_stop": 0}, 0, None, 0)
            return StreamPoll(status, [], BatchTally())
        capture, stats, inference = pipeline.captures[0], pipeline.stats[0], pipeline.inference
        age = None if capture.last_frame_at is None else now - capture.last_frame_at
        status = StreamStatus(self.incarnation, self.node, capture.status(now), stats.started_at, now,
                              capture.frames_read, capture.stale_discarded, capture.reconnects, capture.stalls,
                              capture.backlog_skipped, pipeline.mux.drops(0), pipeline.mux.fill(0), age,
                              inference.retried)
        return StreamPoll(status, stats.drain(), inference.drain_tally())
