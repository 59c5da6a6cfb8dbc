"""The one list of backends and what each can do.

Each backend declares its `Capabilities` on its class; its module imports its runtime only inside
functions, so reading them (config validation, `--help`, bench's combinations) loads no runtime.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from stream.errors import UserError

# The one list of backends: name → where its class lives. A backend's module imports its runtime only
# inside functions, so importing the class to read its capabilities loads no runtime.
_CLASSES = {"torch": "stream.backends.torch_backend:TorchBackend",
            "onnxruntime": "stream.backends.onnxruntime_backend:OnnxRuntimeBackend",
            "openvino": "stream.backends.openvino_backend:OpenVinoBackend",
            "tensorrt": "stream.backends.tensorrt_backend:TensorRTBackend"}
BACKEND_NAMES = tuple(_CLASSES)
AUTO = "auto"
# --backend auto: the fastest first, as measured here (README, Backends): on a CPU OpenVINO and ONNX Runtime run
# EfficientNet-Lite0 four times as fast as PyTorch eager; on an NVIDIA GPU TensorRT leads CUDA PyTorch.
AUTO_ORDER = {"cuda": ("tensorrt", "torch"), "cpu": ("openvino", "onnxruntime", "torch")}


def _class(name: str) -> type:
    try:
        module, _, attr = _CLASSES[name].partition(":")
    except KeyError:
        raise UserError(f"unknown backend {name!r}; choose one of: {', '.join(BACKEND_NAMES)}") from None
    return getattr(importlib.import_module(module), attr)


def require_package(module: str, backend: str) -> None:
    """A CPU runtime that pip installs: one line naming the fix when it is missing."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise UserError(f"--backend {backend}: the {module} package is not installed; pip install -r requirements.txt")


def backend_class(name: str) -> type:
    """The class for `name`, or a UserError naming what is missing; call before loading a model."""
    cls = _class(name)
    check = getattr(cls, "check_available", None)
    if check is not None:
        check()
    return cls


@dataclass(frozen=True)
class BackendChoice:
    name: str
    reason: str  # what the first lines and the report say of the choice


def nvidia_gpu_present() -> bool:
    """Whether an NVIDIA driver is loaded here, asked without importing torch (2-3 s, 800 MB) on every CPU run."""
    import os
    import shutil

    return os.path.exists("/proc/driver/nvidia/version") or shutil.which("nvidia-smi") is not None


def choose_backend(device: str, precision: str, exclude: tuple[str, ...] = ()) -> BackendChoice:
    """`--backend auto`: the fastest backend that is installed and offers the device and precision asked for,
    with the reason (and why faster ones were passed over). `exclude`: backends that cannot run the model."""
    kind = device.partition(":")[0]
    kinds = [kind] if kind != AUTO else (["cuda", "cpu"] if nvidia_gpu_present() else ["cpu"])
    passed: list[str] = []
    for kind in kinds:
        for name in AUTO_ORDER.get(kind, ()):
            why_not = _cannot(name, kind, precision, exclude)
            if why_not is None:
                where = "an NVIDIA GPU" if kind == "cuda" else "the CPU"
                reason = f"--backend auto: the fastest backend installed for {where}"
                if passed:
                    reason += f" ({'; '.join(passed)})"
                return BackendChoice(name, reason)
            passed.append(why_not)
    raise UserError(f"--backend auto: no backend can run this here ({'; '.join(passed) or 'no device'}); "
                    "name one with --backend")


def _cannot(name: str, kind: str, precision: str, exclude: tuple[str, ...]) -> str | None:
    if name in exclude:
        return f"not {name}: it cannot run this model"
    if precision != AUTO and precision not in capabilities(name).precisions:
        return f"not {name}: no {precision}"
    try:
        backend_class(name)
    except UserError as exc:
        return f"not {name}: {str(exc).split(';')[0].removeprefix(f'--backend {name}: ')}"
    if name == "torch" and kind == "cuda" and not _torch_cuda():
        return "not torch: no CUDA GPU is visible to PyTorch"
    return None


def _torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do, declared on its class (`capabilities = Capabilities(...)`) and readable
    without importing its runtime: the config, the command lines, bench and eval ask it."""

    precisions: tuple[str, ...]  # what --precision may name besides auto
    cpu_bound: bool  # its model runs on the CPU cores the pipeline shares (threads are planned for it)
    devices: tuple[str, ...] = ("cpu",)  # device kinds it runs on: cpu, cuda
    default_precision: str = "fp32"  # what --precision auto means
    hints: tuple[str, ...] = ()  # the --openvino-hint values it takes (auto first); (): it takes none
    converters: tuple[str, ...] = ()  # the --trt-converter values it takes (its default first)


def capabilities(name: str) -> Capabilities:
    return _class(name).capabilities


def _union(field: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v for name in BACKEND_NAMES for v in getattr(capabilities(name), field)))


def precision_choices() -> tuple[str, ...]:
    return ("auto", *_union("precisions"))


def hint_choices() -> tuple[str, ...]:
    return _union("hints")


def converter_choices() -> tuple[str, ...]:
    return _union("converters")


def offering(field: str, value: str) -> list[str]:
    """The backends whose capability `field` lists `value` ("precisions", "int8" → the int8 backends)."""
    return [name for name in BACKEND_NAMES if value in getattr(capabilities(name), field)]


def runs(backend: str, precision: str) -> bool:
    """Whether `backend` offers `precision` at all (bench and eval leave the others out)."""
    return precision == "auto" or precision in capabilities(backend).precisions


def check_precision(backend: str, precision: str) -> None:
    """A precision the backend does not offer: one line naming the backends that do."""
    if precision not in precision_choices():
        raise UserError(f"unknown precision {precision!r}; use {', '.join(precision_choices())}")
    if runs(backend, precision):
        return
    what = " (a calibrated QDQ model)" if precision == "int8" else ""
    raise UserError(f"--precision {precision} runs on {', '.join(offering('precisions', precision))}{what}, not on "
                    f"{backend} (it runs {' or '.join(capabilities(backend).precisions)}); "
                    + ("add --backend onnxruntime for the CPU" if precision == "int8" else "use --precision auto"))


def resolve_precision(backend: str, requested: str) -> str:
    """The precision `backend` runs for `requested`: its default for auto; one line if it does not offer it."""
    check_precision(backend, requested)
    return capabilities(backend).default_precision if requested == "auto" else requested


def check_offered(backend: str, *, precision: str, device: str, hint: str, converter: str) -> None:
    """What the settings ask of `backend` against what it declares: one line for the first thing it does not
    offer. A hint or converter of another backend's is left alone (it does not apply)."""
    caps = capabilities(backend)
    check_precision(backend, precision)
    kind = device.partition(":")[0]
    if kind != "auto" and kind not in caps.devices:
        raise UserError(f"--device {device}: {backend} runs on {' or '.join(caps.devices)}; drop --device, or use a "
                        f"backend that runs on {kind} ({', '.join(offering('devices', kind))})")
    for flag, value, own, known in (("--openvino-hint", hint, caps.hints, hint_choices()),
                                    ("--trt-converter", converter, caps.converters, converter_choices())):
        if value not in (own or known):
            raise UserError(f"unknown {flag} {value!r} for {backend}; use one of {', '.join(own or known)}")


def auto_precisions() -> str:
    """What --precision auto means, for help texts: "fp16 for tensorrt, fp32 otherwise"."""
    defaults = {name: capabilities(name).default_precision for name in BACKEND_NAMES}
    common = max(set(defaults.values()), key=list(defaults.values()).count)
    special = ", ".join(f"{p} for {name}" for name, p in defaults.items() if p != common)
    return f"{special}, {common} otherwise" if special else common
