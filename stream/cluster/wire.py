"""The records that cross process (and node) boundaries in the Ray engine; all small and picklable."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from stream.frames import Prediction
from stream.media.truncation import DecodeCheck
from stream.session.launch import LoadedModel


@dataclass(frozen=True)
class ModelInput:
    """A few consecutive frames of one stream: each crop as whole 8-bit values, N×3×224×224 uint8 (147 KB a
    frame). Several frames to a request when a file stream has them ready: Serve's cost is per request."""

    stream: str
    pixels: np.ndarray


def frames_in(inputs: list[ModelInput]) -> int:
    """@serve.batch's measure of a batch: frames, not requests."""
    return sum(len(i.pixels) for i in inputs)


@dataclass(frozen=True)
class Reply:
    logits: np.ndarray  # N×C float32 logits, one row per frame of the request
    batch_size: int  # frames in the replica's batch this request was part of
    batch_streams: int  # how many streams those frames came from
    model_ms: float  # the backend's time for that whole batch
    replica: str
    node: str


# What the replicas loaded, for the streams (labels, preprocessing) and the report: the session's own record.
ModelCard = LoadedModel


@dataclass
class BatchTally:
    """Frames by (replica, node, batch size), counted where the replies arrive. A batch of n frames is
    counted n times, once by each frame's stream, so batches = frames / n exactly, with no per-batch
    record to keep: bounded memory whatever the run's length."""

    frames: Counter = field(default_factory=Counter)  # (replica, node, batch size) → frames
    multi_stream: Counter = field(default_factory=Counter)  # replica → frames in batches mixing streams
    model_s: Counter = field(default_factory=Counter)  # replica → summed per-frame model seconds

    def add(self, reply: Reply) -> None:
        n = len(reply.logits)
        self.frames[(reply.replica, reply.node, reply.batch_size)] += n
        self.multi_stream[reply.replica] += n if reply.batch_streams > 1 else 0
        self.model_s[reply.replica] += n * reply.model_ms / reply.batch_size / 1000

    def merge(self, other: BatchTally) -> None:
        self.frames.update(other.frames)
        self.multi_stream.update(other.multi_stream)
        self.model_s.update(other.model_s)


@dataclass(frozen=True)
class Captured:
    at: float


@dataclass(frozen=True)
class Inferred:
    prediction: Prediction


@dataclass(frozen=True)
class Rendered:
    frame_index: int
    captured_at: float
    prediction: Prediction
    render_ms: float
    at: float


Event = Captured | Inferred | Rendered


@dataclass(frozen=True)
class ActorStatus:
    """A stream's live figures, as its actor sees them (its clock: time.perf_counter())."""

    incarnation: int  # 0, then 1, 2 ... after each restart of its actor
    node: str
    state: str
    started_at: float | None
    now: float
    frames_read: int
    stale_discarded: int
    reconnects: int
    stalls: int
    backlog_skipped: int
    drops: dict[str, int]
    queue_fill: int
    last_frame_age_s: float | None
    retried: int  # requests sent again after the replica they were on died


@dataclass(frozen=True)
class ActorPoll:
    """What the driver collects a few times a second: the status and what happened since the last poll."""

    status: ActorStatus
    events: list[Event]
    tally: BatchTally


@dataclass(frozen=True)
class ActorResult:
    """A stream actor's run, once it has ended: its last poll and what only the end knows."""

    poll: ActorPoll
    end_reason: str
    error: BaseException | None  # what ended it, if it failed (a UserError keeps its exit code)
    sinks: list  # each sink's typed summary (stream.outputs.sinks)
    decode: DecodeCheck | None  # a file's decode check at its end (stream.media.truncation)
    warnings: list[str] = field(default_factory=list)
    health: object = None  # the stream's stream.pipeline.health.HealthSummary (a live stream's)
