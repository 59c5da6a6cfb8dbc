"""The model as a cached ONNX file plus its metadata, shared by the ONNX Runtime and TensorRT backends.

A cache hit needs neither torch nor the weights: the sidecar carries the category names and the
preprocessing, so a warm start on these backends does not import torch at all.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.spec import ONNX_OPSET, CustomModel, GraphIO, ModelInfo, ModelRequest, PreprocessSpec, package_version
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
    graph: GraphIO = field(default_factory=GraphIO)  # how the graph takes its input (a user's may differ)
    graph_id: str = ""  # the graph's identity for the keys of artifacts built from it: its cached name or hash

    @property
    def graph_key(self) -> str:
        return self.graph_id or self.path.name


def onnx_fields(request: ModelRequest, precision: str) -> dict:
    fields = {"artifact": "onnx", "model": request.cache_name(), "weights": request.weights_id(),
              "precision": precision, "batch": "dynamic", "opset": ONNX_OPSET,
              "exporter": f"torch-{package_version('torch')}"}
    if request.custom is not None:  # its labels and preprocessing live in the sidecar: a change is a new entry
        fields["custom"] = request.custom.digest()
        if request.onnx_only:
            fields.update(batch=request.custom.graph.batch or "dynamic", exporter="the user's file")
    return fields


def user_onnx(custom: CustomModel) -> OnnxModel:
    """The user's ONNX file as it is: nothing exported, nothing cached (models.card read and checked it)."""
    spec = PreprocessSpec(**dict(custom.overrides))
    info = ModelInfo(custom.name, custom.labels, spec, f"{Path(custom.onnx).name} (sha256 {custom.onnx_sha256[:12]})",
                     False)
    return OnnxModel(Path(custom.onnx), info, (3, spec.crop, spec.crop), 0.0, None, "not used", custom.graph,
                     f"sha256:{custom.onnx_sha256}")


def graph_of(request: ModelRequest) -> GraphIO:
    return request.custom.graph if request.custom is not None else GraphIO()


def to_layout(batch: np.ndarray, graph: GraphIO) -> np.ndarray:
    """The pipeline's NCHW float32 batch in the graph's layout."""
    batch = np.asarray(batch, dtype=np.float32)
    return np.ascontiguousarray(batch.transpose(0, 2, 3, 1) if graph.layout == "nhwc" else batch)


def as_logits(scores: np.ndarray, graph: GraphIO) -> np.ndarray:
    """Scores as logits: probabilities become their logarithms, whose softmax (the pipeline's) is them again."""
    if graph.output != "probabilities":
        return scores
    return np.log(np.maximum(scores.astype(np.float32), np.float32(1e-30)))


def run_graph(batch: np.ndarray, graph: GraphIO, run: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """`run` (the runtime's call on the graph's own input) on a pipeline batch: the layout changed, a fixed
    batch filled chunk by chunk (the last padded with zeros), probabilities made logits."""
    x = to_layout(batch, graph)
    size = graph.batch
    if size is None or len(x) == size:
        return as_logits(np.asarray(run(x)), graph)
    outs = []
    for start in range(0, len(x), size):
        chunk = x[start:start + size]
        if len(chunk) < size:
            chunk = np.concatenate([chunk, np.zeros((size - len(chunk), *chunk.shape[1:]), np.float32)])
        outs.append(np.asarray(run(chunk))[: min(size, len(x) - start)])
    return as_logits(np.concatenate(outs), graph)


def read_onnx(look: Lookup) -> tuple[ModelInfo, tuple[int, int, int]]:
    """The model's metadata from a cached ONNX model's sidecar (it needs neither torch nor the weights)."""
    try:
        return ModelInfo.from_dict(look.meta["model"]), tuple(int(n) for n in look.meta["input_shape"])
    except (KeyError, TypeError, ValueError):
        raise Unusable("its sidecar metadata is corrupt") from None


def get_onnx_model(request: ModelRequest, precision: str, cache: ArtifactCache) -> OnnxModel:
    if request.onnx_only:
        if precision != "fp32":
            raise UserError(f"--precision {precision} of {request.custom.name}: a user's ONNX model runs in its own "
                            "precision (fp32, or int8 calibrated here); export an fp16 graph yourself for fp16")
        return user_onnx(request.custom)
    weights_s = 0.0

    def build() -> Build:
        nonlocal weights_s
        from models.export import export_onnx
        from models.registry import load_model

        started = time.perf_counter()
        model = load_model(request.name, request.weights, request.custom)
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
    return OnnxModel(got.artifact, info, shape, weights_s, got.build_s, got.cache, graph_of(request))
