"""The model as a cached ONNX file plus its metadata, shared by the ONNX Runtime and TensorRT backends.

A cache hit needs neither torch nor the weights: the sidecar carries the category names and the
preprocessing, so a warm start on these backends does not import torch at all.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from models.spec import ONNX_OPSET, ModelInfo, ModelRequest, package_version
from stream.backends.cache import ArtifactCache, Build, Lookup, Unusable
from stream.errors import UserError


@dataclass(frozen=True)
class OnnxModel:
    path: Path
    info: ModelInfo
    input_shape: tuple[int, int, int]  # C, H, W; the batch axis is dynamic
    weights_s: float  # torch model build + weights load when exported now, else 0
    build_s: float | None  # export time when exported now
    cache: str  # hit | miss | rebuilt (why)


def onnx_fields(request: ModelRequest, precision: str) -> dict:
    return {"artifact": "onnx", "model": request.name, "weights": request.weights_id(), "precision": precision,
            "batch": "dynamic", "opset": ONNX_OPSET, "exporter": f"torch-{package_version('torch')}"}


def read_onnx(look: Lookup) -> tuple[ModelInfo, tuple[int, int, int]]:
    """The model's metadata from a cached ONNX model's sidecar (it needs neither torch nor the weights)."""
    try:
        return ModelInfo.from_dict(look.meta["model"]), tuple(int(n) for n in look.meta["input_shape"])
    except (KeyError, TypeError, ValueError):
        raise Unusable("its sidecar metadata is corrupt") from None


def get_onnx_model(request: ModelRequest, precision: str, cache: ArtifactCache) -> OnnxModel:
    weights_s = 0.0

    def build() -> Build:
        nonlocal weights_s
        from models.export import export_onnx
        from models.registry import load_model

        started = time.perf_counter()
        model = load_model(request.name, request.weights)
        weights_s = time.perf_counter() - started
        crop = model.preprocess.crop
        shape = (3, crop, crop)

        def export(tmp: Path, progress) -> None:
            try:
                export_onnx(model.module, tmp, crop, precision)
            except Exception as exc:  # noqa: BLE001 - an op the exporter cannot express: one line, a way out
                first = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
                raise UserError(f"could not export {request.name} to ONNX ({first}); run it with --backend torch"
                                ) from None

        return Build(f"exporting {request.name} ({precision}) to ONNX: once per model and weights, cached in "
                     f"{cache.root}", export, lambda path: (model.info, shape),
                     {"model": model.info.to_dict(), "input_shape": list(shape)})

    got = cache.load_or_build("onnx", onnx_fields(request, precision), ".onnx", label=f"ONNX model for {request.name}",
                              again="exporting it again", read=read_onnx, build=build)
    info, shape = got.value
    return OnnxModel(got.artifact, info, shape, weights_s, got.build_s, got.cache)
