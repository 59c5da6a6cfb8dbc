"""What the decisions stage hands on: label segments, events, and what each event output delivered."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol

from stream.frames import Steady


@dataclass(frozen=True)
class Segment:
    """A stretch of one steady label on one stream, written when it closes."""

    stream: str
    label: str
    start_frame: int
    end_frame: int
    start_s: float
    end_s: float
    peak_prob: float
    mean_prob: float
    frames: int

    def record(self) -> dict:
        r = asdict(self)
        for key in ("start_s", "end_s", "peak_prob", "mean_prob"):
            r[key] = round(r[key], 6)
        return {"type": "segment", **r}


@dataclass(frozen=True)
class Event:
    """One rule's start or end on one stream; the same record goes to every output."""

    type: str  # "start" | "end"
    rule: str
    stream: str
    label: str
    prob: float
    time_s: float  # the stream's own clock: media time for files
    frame: int
    wall_time: str  # ISO 8601, UTC
    snapshot: str | None = None  # a JPEG of the annotated frame (under --clips)
    clip: str | None = None  # the mp4 that will hold it (under --clips, for rules with clip = true)

    def record(self) -> dict:
        r = asdict(self)
        r["prob"], r["time_s"] = round(self.prob, 6), round(self.time_s, 6)
        return r


@dataclass(frozen=True)
class Delivery:
    """An event output's counts: `failed` gave up after retries, `dropped` never tried (its queue was full)."""

    output: str
    delivered: int = 0
    failed: int = 0
    dropped: int = 0
    pending: int = 0
    state: str = "ok"  # e.g. "connected", "disconnected", "ok"


class EventOutput(Protocol):
    """Where events go (a file, a broker, webhooks). No call may block the video: an output that cannot keep up
    queues within a bound, then counts what it dropped."""

    name: str  # as shown in the report and /metrics, credentials masked

    def publish(self, event: Event) -> None: ...

    def steady(self, stream: str, steady: Steady) -> None:
        """The stream's steady label changed (MQTT keeps it retained)."""
        ...

    def stream_gone(self, stream: str) -> None: ...

    def delivery(self) -> Delivery: ...

    def close(self) -> None:
        """Deliver what it can within a few seconds, then stop; counts what was left."""
        ...


class SegmentOutput(Protocol):
    def segment(self, segment: Segment) -> None: ...

    def close(self) -> None: ...


class EventMedia(Protocol):
    """Snapshots and clips with pre-roll (stream.outputs.clips): fed every annotated frame of the streams it
    wants, told of every event; it returns the paths the event records carry."""

    def wants(self, stream: str) -> bool: ...

    def frame(self, stream: str, index: int, time_s: float, annotated) -> None: ...

    def start(self, event: Event, annotated) -> tuple[str | None, str | None]:
        """(snapshot path, clip path or None) for a start event."""
        ...

    def end(self, event: Event) -> str | None:
        """The clip path of an end event (the one its start was given)."""
        ...

    def stream_ended(self, stream: str) -> None: ...

    def close(self) -> None: ...

    def summary(self) -> dict: ...
