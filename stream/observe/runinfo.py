"""What a run is: the fixed facts shown by the dashboard and written to the report."""

from __future__ import annotations

from dataclasses import dataclass

from stream.media.sources import SourceInfo


@dataclass(frozen=True)
class RunInfo:
    source: SourceInfo
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
    # Every stream as (name, source, drop policy); empty means the one `source` above.
    streams: tuple[tuple[str, SourceInfo, str], ...] = ()
