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
from stream.backends.cores import available_cores as available_cores  # the one name callers import
from stream.errors import UserError

if TYPE_CHECKING:
    from stream.backends.quantize import Calibration

PRECISIONS = ("auto", "fp32", "fp16", "int8")
INT8_BACKENDS = ("onnxruntime", "openvino", "tensorrt")
HINTS = ("auto", "latency", "throughput")  # OpenVINO's performance hint; auto: latency at batch 1


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


def _torch() -> type:
    from stream.backends.torch_backend import TorchBackend

    return TorchBackend


def _onnxruntime() -> type:
    from stream.backends.onnxruntime_backend import OnnxRuntimeBackend

    OnnxRuntimeBackend.check_available()
    return OnnxRuntimeBackend


def _openvino() -> type:
    from stream.backends.openvino_backend import OpenVinoBackend

    OpenVinoBackend.check_available()
    return OpenVinoBackend


def _tensorrt() -> type:
    from stream.backends.tensorrt_backend import TensorRTBackend

    TensorRTBackend.check_available()
    return TensorRTBackend


# name → loader of the backend's class; loaders import lazily so GPU libraries load only on demand.
# The one list of backend names: the config, the command lines and bench read it from here.
BACKENDS: dict[str, Callable[[], type]] = {"torch": _torch, "onnxruntime": _onnxruntime, "openvino": _openvino,
                                           "tensorrt": _tensorrt}
BACKEND_NAMES = tuple(BACKENDS)


def backend_class(name: str) -> type:
    """The class for `name`, or a UserError naming what is missing; call before loading a model."""
    try:
        loader = BACKENDS[name]
    except KeyError:
        raise UserError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}") from None
    return loader()


def timed_warmup(infer: Callable[[Any], np.ndarray], dummy: Any, iterations: int) -> float:
    """Untimed-for-the-run iterations (lazy initialisation, allocator growth); seconds they took."""
    started = time.perf_counter()
    for _ in range(iterations):
        infer(dummy)
    return time.perf_counter() - started


def resolve_precision(requested: str, default: str) -> str:
    if requested not in PRECISIONS:
        raise UserError(f"unknown precision {requested!r}; use {', '.join(PRECISIONS)}")
    return default if requested == "auto" else requested


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do, readable without importing its runtime."""

    precisions: tuple[str, ...]
    cpu_bound: bool  # its model runs on the CPU cores the pipeline shares (threads are planned for it)


_CAPABILITIES = {
    "torch": Capabilities(("fp32", "fp16"), False),
    "onnxruntime": Capabilities(("fp32", "fp16", "int8"), True),
    "openvino": Capabilities(("fp32", "fp16", "int8"), True),
    "tensorrt": Capabilities(("fp32", "fp16", "int8"), False),
}


def capabilities(name: str) -> Capabilities:
    return _CAPABILITIES[name]


def runs(backend: str, precision: str) -> bool:
    """Whether `backend` offers `precision` at all (int8 needs a calibrated Q/DQ model)."""
    return precision != "int8" or backend in INT8_BACKENDS


def check_precision(backend: str, precision: str) -> None:
    """int8 only where a calibrated int8 model can run: one line naming those backends."""
    if not runs(backend, precision):
        raise UserError(f"--precision int8 runs on {', '.join(INT8_BACKENDS)} (a calibrated QDQ model), not on "
                        f"{backend}; add --backend onnxruntime for the CPU")
