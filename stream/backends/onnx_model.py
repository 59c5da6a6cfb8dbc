"""The model as a cached ONNX file plus its metadata, shared by the ONNX Runtime and TensorRT backends.

A cache hit needs neither torch nor the weights: the sidecar carries the category names and the
preprocessing, so a warm start on these backends does not import torch at all.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from models.spec import ONNX_OPSET, ModelInfo, ModelRequest, package_version
from stream.backends.cache import ArtifactCache, Lookup
from stream.backends.progress import BuildProgress
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


def cache_status(look: Lookup) -> str:
    return "hit" if look.hit else (f"rebuilt ({look.reason})" if look.stale else "miss")


def cached_onnx(look: Lookup) -> tuple[OnnxModel | None, Lookup]:
    """The cached ONNX model a hit describes (its sidecar carries the model's metadata), or None and the
    lookup turned into a miss when that metadata is unreadable."""
    if not look.hit:
        return None, look
    try:
        info, shape = ModelInfo.from_dict(look.meta["model"]), tuple(int(n) for n in look.meta["input_shape"])
        return OnnxModel(look.artifact, info, shape, 0.0, None, "hit"), look
    except (KeyError, TypeError, ValueError):
        return None, Lookup(look.artifact, look.sidecar, False, "its sidecar metadata is corrupt")


def get_onnx_model(request: ModelRequest, precision: str, cache: ArtifactCache) -> OnnxModel:
    fields = onnx_fields(request, precision)
    hit, look = cached_onnx(cache.lookup("onnx", fields, ".onnx"))
    if hit is not None:
        return hit
    if look.stale:
        print(f"cached ONNX model for {request.name} is unusable ({look.reason}); exporting it again", flush=True)
    from models.export import export_onnx
    from models.registry import load_model

    started = time.perf_counter()
    model = load_model(request.name, request.weights)
    weights_s = time.perf_counter() - started
    crop = model.preprocess.crop
    shape = (3, crop, crop)

    def export(tmp: Path) -> None:
        try:
            export_onnx(model.module, tmp, crop, precision)
        except Exception as exc:  # noqa: BLE001 - an op the exporter cannot express: one line, a way out
            first = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
            raise UserError(f"could not export {request.name} to ONNX ({first}); run it with --backend torch") from None

    with BuildProgress(f"exporting {request.name} ({precision}) to ONNX: once per model and weights, "
                       f"cached in {cache.root}") as progress:
        path = cache.store("onnx", fields, ".onnx", export,
                           meta={"model": model.info.to_dict(), "input_shape": list(shape)})
    return OnnxModel(path, model.info, shape, weights_s, progress.elapsed_s, cache_status(look))
