"""What a run is: the fixed facts shown by the dashboard and written to the report."""

from __future__ import annotations

from dataclasses import dataclass

from stream.media.sources import SourceInfo

RANDOM_WARNING = "RANDOM WEIGHTS - labels are meaningless"  # on every frame and the dashboard


@dataclass(frozen=True)
class RunInfo:
    source: SourceInfo | None  # the first stream's; None for a run that starts with none (a service)
    model: str
    weights: str
    random_weights: bool
    backend: str
    device: str
    precision: str
    batch: int
    drop_policy: str
    resize: str = "faithful"  # preprocessing: "faithful" to the weights' transform, or "fast"
    interpolation: str = "bilinear"  # the weights' resize filter
    engine: str = "local"  # local | ray
    threads: int | None = None  # a CPU runtime's intra-op threads
    calls: int = 1  # model calls side by side (stream.pipeline.inference)
