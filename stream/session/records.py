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
from stream.outputs.sinks import VideoSummary
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


def written_frames(summaries: list) -> int | None:
    """The frames a stream's video file holds, read from its sinks' typed summaries; None without a video."""
    return next((s.written for s in summaries if isinstance(s, VideoSummary)), None)


@dataclass
class Retired:
    """Removed streams a long service no longer lists one by one (the oldest beyond the newest few): their sum."""

    count: int = 0
    frames_read: int = 0
    frames_shown: int = 0
    stale_discarded: int = 0
    dropped: int = 0
    written: int | None = None  # frames in their video files, where they wrote one

    def add(self, outcome: StreamOutcome) -> None:
        self.count += 1
        self.frames_read += outcome.frames_read
        self.frames_shown += outcome.stats.snapshot().frames_rendered
        self.stale_discarded += outcome.stale_discarded
        self.dropped += sum(outcome.drops.values())
        written = written_frames(outcome.sinks)
        if written is not None:
            self.written = (self.written or 0) + written

    def as_dict(self) -> dict:
        return {"count": self.count, "frames_read": self.frames_read, "frames_shown": self.frames_shown,
                "frames_dropped": self.dropped, "stale_at_start": self.stale_discarded, "frames_written": self.written}


@dataclass
class RunOutcome:
    status: str  # completed | interrupted | error
    end_reason: str
    stats: StatsCollector  # the whole run (all streams)
    streams: list[StreamOutcome] = field(default_factory=list)
    error: BaseException | None = None
    warnings: list[str] = field(default_factory=list)
    retired: Retired = field(default_factory=Retired)  # removed streams no longer listed in `streams`

    @property
    def frames_read(self) -> int:
        return sum(s.frames_read for s in self.streams) + self.retired.frames_read

    @property
    def stale_discarded(self) -> int:
        return sum(s.stale_discarded for s in self.streams) + self.retired.stale_discarded


@dataclass(frozen=True)
class EngineResult:
    """What an engine hands back when it finishes: every stream's outcome, and the faults of the run itself."""

    streams: list[StreamOutcome]
    failure: BaseException | None = None  # a stage thread's (or a stream actor's driver-side) own failure
    close_error: BaseException | None = None  # a sink that could not be written or finalised
    warnings: list[str] = field(default_factory=list)
