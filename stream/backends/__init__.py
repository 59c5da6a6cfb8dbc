"""Inference backends behind one small interface, chosen by name through a factory.

A backend loads a model from a `ModelRequest` (building and caching what it needs), takes a
normalised NCHW float32 batch on its `input_device` and returns N×C float32 logits on the host;
the pipeline never asks which backend it runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from models.spec import ModelInfo
from stream.backends.registry import (  # noqa: F401 - the package's names for what the registry holds
    AUTO,
    BACKEND_NAMES,
    BackendChoice,
    Capabilities,
    auto_precisions,
    backend_class,
    capabilities,
    check_offered,
    check_precision,
    choose_backend,
    converter_choices,
    hint_choices,
    offering,
    precision_choices,
    resolve_precision,
    runs,
)
from stream.cores import available_cores as available_cores  # the one name callers import

if TYPE_CHECKING:
    from stream.backends.quantize import Calibration


@dataclass(frozen=True)
class BackendOptions:
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto | fp32 | fp16 | int8; auto is fp16 for TensorRT, fp32 elsewhere
    max_batch: int = 1
    cache_dir: str | None = None  # None: the user cache dir (see backends.cache)
    threads: int | None = None  # intra-op threads on CPU; None: one per available core
    trt_converter: str = "onnx"  # onnx (TensorRT's ONNX parser) | torch2trt
    calibration: Calibration | None = None  # int8's calibration frames; None: the sample clip, 64 frames, minmax
    hint: str = "auto"  # latency for live sources, throughput for files (OpenVINO)

    @classmethod
    def from_settings(cls, settings, *, batch: int, live: bool, threads: int | None,
                      calibration: Calibration | None) -> BackendOptions:
        """What the backend is told, from the settings the user gave (a `BackendSettings`: a Config, a lab
        Job), alike for the run, every Ray replica and the lab's workers. `threads` and `calibration` are the
        caller's resolved ones (the plan's thread count; `--calibration source` made a path). OpenVINO's
        auto hint becomes latency when any source is live; otherwise the backend chooses by batch."""
        hint = "latency" if live and settings.openvino_hint == "auto" else settings.openvino_hint
        return cls(settings.device, settings.precision, batch, settings.cache_dir, threads, settings.trt_converter,
                   calibration, hint)


@dataclass(frozen=True)
class LoadRecord:
    weights_s: float  # model from disk: weights into torch, or the cached ONNX/engine into its runtime
    build_s: float | None  # export to ONNX and/or engine build, when one ran in this process
    cache: str  # "not used" | "hit" | "miss" | "rebuilt (<why the cached one was unusable>)"
    artifact: str | None = None  # the cached file that was run


class Backend(Protocol):
    name: str
    runtime_modules: tuple[str, ...]  # what the backend imports to run (timed apart by `bench`)
    device: str  # "cpu", "cuda:0", ...
    input_device: str  # where `infer` wants its batch: "cpu" (numpy) or "cuda:N" (torch tensor)
    precision: str  # "fp32" | "fp16" | "int8"
    model: ModelInfo
    load: LoadRecord

    def infer(self, batch: Any) -> np.ndarray:
        """Logits for a batch; returns only once the device work is done (safe to time)."""
        ...

    def warmup(self, batch_size: int, iterations: int) -> float:
        """Run untimed iterations so that lazy initialisation is out of the figures; seconds spent."""
        ...

    def device_peak_mb(self) -> float | None:
        """Peak accelerator memory of this backend in MB (whatever the device: CUDA today); None on CPU."""
        ...

    def close(self) -> None: ...


def timed_warmup(infer: Callable[[Any], np.ndarray], dummy: Any, iterations: int) -> float:
    """Untimed-for-the-run iterations (lazy initialisation, allocator growth); seconds they took."""
    started = time.perf_counter()
    for _ in range(iterations):
        infer(dummy)
    return time.perf_counter() - started
