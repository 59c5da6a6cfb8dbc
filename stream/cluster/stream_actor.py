"""Each stream as a Ray actor: the local engine for one stream, next to its source.

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
from stream.cluster.remote_inference import Uint8Crop, remote_inference
from stream.cluster.wire import ActorPoll, ActorResult, ActorStatus, BatchTally, ModelCard
from stream.media.sources import MAX_IMAGE_PIXELS
from stream.media.streams import StreamSpec
from stream.observe.realtime import Target
from stream.observe.stats import StatsCollector
from stream.outputs.kinds import Outputs
from stream.pipeline.capture import Reconnect
from stream.pipeline.health import HealthRules
from stream.pipeline.inference import Batching
from stream.pipeline.render import Renderer
from stream.session.launch import open_stream
from stream.session.local import LocalEngine
from stream.session.plan import StreamPlan
from stream.session.records import NO_DROPS, StreamSlot


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
    max_image_pixels: int = MAX_IMAGE_PIXELS
    health: HealthRules | None = None


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
        self.engine: LocalEngine | None = None
        self._stop_reason: str | None = None
        self._lock = threading.Lock()

    def clock(self) -> float:
        return time.perf_counter()

    def stop(self, reason: str) -> None:
        self._stop_reason = reason

    def run(self) -> ActorResult:
        job = self.job
        source = open_stream(job.uri, max_image_pixels=job.max_image_pixels)
        plan = job.plan
        stats = RecordingCollector(lambda: self._engine_fill(), plan.buffer, lambda: self._engine_dropped(),
                                   lambda: None, plan.total,
                                   Target(plan.target_fps, plan.judge_latency, job.batching.size,
                                          plan.latency_budget_ms))
        outputs = Outputs({"output": restart_path(job.video, self.incarnation),
                           "predictions": restart_path(job.predictions, self.incarnation)}, job.codec)
        categories = list(job.card.model.categories)
        handle = serve.get_deployment_handle(DEPLOYMENT, app_name=job.app)
        stage = remote_inference(Uint8Crop(job.card.model.preprocess, job.resize), handle, job.name, categories,
                                 job.batching, job.in_flight, job.chunk)
        engine = LocalEngine(stage, Renderer(job.card.model.random_weights), job.batching, StatsCollector(),
                             job.reconnect, outputs, open_stream if source.info.live else None, health=job.health)
        slot = StreamSlot(0, StreamSpec(job.uri, job.name), source.info, plan, stats, source)
        try:
            engine.add(slot)
        except BaseException:
            source.close()
            raise
        with self._lock:
            self.engine = engine
        reason, error = "end of input", None
        engine.start()
        try:
            while not self._stop_reason and not (reason := engine.step(0.1)):
                pass
            reason = self._stop_reason or reason
        except Exception as exc:  # noqa: BLE001 - the render loop's own failure, reported like a stage's
            error = exc
        result = engine.finish(drain=error is None, reason=reason)
        stream = result.streams[0]
        error = result.failure or error or result.close_error or stream.error
        end_reason = f"{type(error).__name__}: {error}" if error is not None else reason
        return ActorResult(self.poll(), end_reason, error, stream.sinks, stream.decode,
                           result.warnings + stream.warnings, stream.health)

    def _engine_fill(self) -> int:
        return self.engine.mux.fill(0) if self.engine else 0

    def _engine_dropped(self) -> int:
        return self.engine.mux.dropped(0) if self.engine else 0

    def poll(self) -> ActorPoll:
        now = time.perf_counter()
        with self._lock:
            engine = self.engine
        if engine is None:
            status = ActorStatus(self.incarnation, self.node, "connecting", None, now, 0, 0, 0, 0, 0,
                                 dict(NO_DROPS), 0, None, 0)
            return ActorPoll(status, [], BatchTally())
        live, stream = engine.live(0, now), engine.streams[0]
        capture, stats = stream.capture, stream.slot.stats
        status = ActorStatus(self.incarnation, self.node, live.state, stats.started_at, now, capture.frames_read,
                             capture.stale_discarded, live.reconnects, live.stalls, capture.backlog_skipped,
                             live.drops, live.queue_fill, live.last_frame_age_s, engine.stage.retried)
        return ActorPoll(status, stats.drain(), engine.stage.drain_tally())
