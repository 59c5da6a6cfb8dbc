"""The records a session and its engine exchange, engine-neutral.

Per stream, three records with three moments: `StreamSlot` (what the session decided when the stream joined),
`StreamLive` (what the engine says of it at a moment, for a snapshot row) and `StreamOutcome` (how it ended,
for the report). The Ray engine's own wire records (stream.cluster.wire) carry these across processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stream.media.sources import Source, SourceInfo
from stream.media.streams import StreamSpec
from stream.media.truncation import DecodeCheck
from stream.observe.stats import StatsCollector
from stream.session.plan import StreamPlan

REMOVED = "removed"  # a stream's state once it was taken out of a run in progress
NO_DROPS = {"full": 0, "stale": 0, "at_stop": 0}


@dataclass
class StreamSlot:
    """A stream as the session admitted it to the run."""

    id: int  # never reused within a run: frames, buffers and collectors are keyed on it
    spec: StreamSpec
    info: SourceInfo
    plan: StreamPlan
    stats: StatsCollector
    source: Source | None = None  # opened by the session; the local engine reads it, Ray probes and closes it
    sinks: list[Any] = field(default_factory=list)  # ready-made sinks (tests); the engine opens the run's outputs

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class StreamLive:
    state: str  # connecting | running | reconnecting | stalled | ended | failed | removed
    drops: dict[str, int]  # by cause: "full" (newest kept), "stale" (too old to be live), "at_stop"
    reconnects: int = 0
    stalls: int = 0
    last_frame_age_s: float | None = None
    queue_fill: int = 0


@dataclass
class StreamOutcome:
    slot: StreamSlot
    state: str
    frames_read: int
    stale_discarded: int  # live frames buffered before the stream started, skipped unprocessed
    reconnects: int
    stalls: int
    backlog_skipped: int  # buffered by a reconnected source before its first fresh frame, never shown
    drops: dict[str, int]
    error: BaseException | None  # what ended it, if it failed (a UserError keeps its exit code)
    end_reason: str
    sinks: list[Any] = field(default_factory=list)  # each sink's typed summary (stream.outputs.sinks)
    decode: DecodeCheck | None = None  # a file's check at its natural end (stream.media.truncation)
    warnings: list[str] = field(default_factory=list)
    health: Any = None  # a live stream's stream.pipeline.health.HealthSummary (None: not judged)

    @property
    def name(self) -> str:
        return self.slot.name

    @property
    def stats(self) -> StatsCollector:
        return self.slot.stats


@dataclass
class RunOutcome:
    status: str  # completed | interrupted | error
    end_reason: str
    stats: StatsCollector  # the whole run (all streams)
    streams: list[StreamOutcome] = field(default_factory=list)
    error: BaseException | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def frames_read(self) -> int:
        return sum(s.frames_read for s in self.streams)

    @property
    def stale_discarded(self) -> int:
        return sum(s.stale_discarded for s in self.streams)


@dataclass(frozen=True)
class EngineResult:
    """What an engine hands back when it finishes: every stream's outcome, and the faults of the run itself."""

    streams: list[StreamOutcome]
    failure: BaseException | None = None  # a stage thread's (or a stream actor's driver-side) own failure
    close_error: BaseException | None = None  # a sink that could not be written or finalised
    warnings: list[str] = field(default_factory=list)
