"""Inference backends behind one small interface, chosen by name through a factory.

A backend takes a normalised NCHW float32 batch and returns N×C float32 logits on the host; the
pipeline never asks which backend it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from stream.errors import UserError


class Backend(Protocol):
    name: str
    device: str  # "cpu", "cuda:0", ...
    precision: str  # "fp32" | "fp16"

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Logits for a batch; returns only once the device work is done (safe to time)."""
        ...

    def warmup(self, batch_size: int, iterations: int) -> float:
        """Run untimed iterations so that lazy initialisation is out of the figures; seconds spent."""
        ...

    def cuda_peak_mb(self) -> float | None: ...

    def close(self) -> None: ...


def _torch() -> type:
    from stream.backends.torch_backend import TorchBackend

    return TorchBackend


def _tensorrt() -> type:
    raise UserError(
        "the TensorRT backend (--trt) is not available yet in this version; "
        "run without --trt to use the PyTorch backend (--backend torch)"
    )


# name → loader of the backend's class; loaders import lazily so GPU libraries load only on demand.
BACKENDS: dict[str, Callable[[], type]] = {"torch": _torch, "tensorrt": _tensorrt}


def backend_class(name: str) -> type:
    """The class for `name`, or a UserError naming what is missing; call before loading a model."""
    try:
        loader = BACKENDS[name]
    except KeyError:
        raise UserError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}") from None
    return loader()
