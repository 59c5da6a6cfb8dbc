"""The typed records that flow between stages: Frame → Prediction → Classified."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded image from a source."""

    index: int  # position in the source (0-based); gaps mean frames were dropped
    image: np.ndarray  # BGR uint8, H×W×3
    captured_at: float  # time.perf_counter() when the capture thread got it
    time_s: float  # position in the media (video timestamp), or seconds since capture start
    stream: int = 0  # which of the run's streams it came from (index into the run's stream list)
    health: str | None = None  # "frozen" or "blank" when its live stream was judged so at this frame


@dataclass(frozen=True, slots=True)
class TopK:
    index: int
    label: str
    prob: float


@dataclass(frozen=True, slots=True)
class StageTimes:
    """Per-frame stage costs in milliseconds. Batch-wide stages are the whole batch's time,
    since every frame of a batch waits for all of it."""

    preprocess_ms: float
    inference_ms: float
    postprocess_ms: float
    batch_size: int


@dataclass(frozen=True, slots=True)
class Prediction:
    frame_index: int
    top: list[TopK]
    times: StageTimes
    done_at: float  # perf_counter() when postprocessing finished


@dataclass(frozen=True, slots=True)
class Steady:
    """A stream's steady label at a frame: the smoothed top class once it has held (stream.decisions.steady)."""

    label: str  # UNCERTAIN when no class qualifies
    prob: float  # its smoothed probability (the best class's, when uncertain)
    since_s: float  # stream time at which it was taken (dated back to when it first qualified)
    since_frame: int = 0

    def record(self) -> dict:
        """As the predictions log and the MQTT label topic carry it."""
        return {"label": self.label, "prob": round(self.prob, 6), "since_s": round(self.since_s, 6)}


UNCERTAIN = "uncertain"


@dataclass(frozen=True, slots=True)
class Classified:
    """A frame with its prediction, on its way to render and the sinks."""

    frame: Frame
    prediction: Prediction
    steady: Steady | None = None  # set by the decisions stage, before render


class EndOfStream:
    """Marker put on a queue after the last item; carries why the stream ended."""

    __slots__ = ("reason",)

    def __init__(self, reason: str = "end of input") -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"EndOfStream({self.reason!r})"
