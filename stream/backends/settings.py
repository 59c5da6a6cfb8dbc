"""The backend's settings as a user gives them, in one record: the run's flags and TOML keys (`Config`
extends it), the lab's flags, its jobs and workers. A setting added here is a flag of the run and of
`bench` and `eval` alike, travels in every lab job and reaches the worker's backend.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields

from stream.backends.quantize import DEFAULT_FRAMES, DEFAULT_METHOD, METHODS, Calibration
from stream.backends.registry import converter_choices, hint_choices, precision_choices
from stream.errors import UserError

RESIZE_MODES = ("faithful", "fast")  # stream.pipeline.preprocess: the weights' own transform, or a cheaper inexact one


@dataclass(frozen=True)
class BackendSettings:
    device: str = "auto"
    precision: str = "auto"  # fp16 for TensorRT, fp32 for the others (each backend's default_precision)
    threads: int | None = None  # intra-op threads for the CPU backends; None: one per available core
    cache_dir: str | None = None  # exported ONNX models and TensorRT engines; None: the user cache dir
    trt_converter: str = "onnx"
    resize: str = "faithful"  # not the backend's own, but what it is fed: measured with it in the lab
    calibration: str | None = None  # int8: video, image or folder to calibrate on; "source": the run's file
    calibration_frames: int = DEFAULT_FRAMES
    calibration_method: str = DEFAULT_METHOD
    openvino_hint: str = "auto"  # OpenVINO: latency for live sources, throughput for files

    @classmethod
    def of(cls, values: Mapping) -> BackendSettings:
        """Its fields out of a larger mapping (parsed flags, a job)."""
        return cls(**{f.name: values[f.name] for f in fields(BackendSettings) if f.name in values})

    def calibration_request(self) -> Calibration:
        return Calibration(self.calibration, self.calibration_frames, self.calibration_method)

    def check_values(self) -> None:
        """Each value on its own (what a backend offers is `registry.check_offered`'s): one line for a bad one."""
        def bad(key: str, fix: str) -> UserError:
            return UserError(f"bad value for {key.replace('_', '-')}: {getattr(self, key)!r}; {fix}")

        if self.threads is not None and not 1 <= self.threads <= 256:
            raise bad("threads", "use 1 to 256 threads")
        if not 1 <= self.calibration_frames <= 4096:
            raise bad("calibration_frames", "use 1 to 4096 frames")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise bad("device", "use auto, cpu, cuda or cuda:N")
        for key, choices in (("precision", precision_choices()), ("trt_converter", converter_choices()),
                             ("resize", RESIZE_MODES), ("calibration_method", METHODS),
                             ("openvino_hint", hint_choices())):
            if getattr(self, key) not in choices:
                raise bad(key, f"choose one of {', '.join(choices)}")


def flags(settings: BackendSettings) -> list[str]:
    """The run's command-line flags for these settings (what the lab's whole-pipeline runs are given)."""
    out = []
    for f in fields(BackendSettings):
        value = getattr(settings, f.name)
        if value is not None:
            out += [f"--{f.name.replace('_', '-')}", str(value)]
    return out


def add_backend_flags(parser: argparse.ArgumentParser, defaults: BackendSettings | None = None,
                      helps: Mapping[str, str] | None = None) -> None:
    """The backend's flags, but --precision (the lab takes a comma list of them): the run's and the lab's are
    these. `defaults` None leaves the parser's own default (the run's SUPPRESS: its Config supplies them)."""
    d, helps = BackendSettings(), helps or {}
    group = parser.add_argument_group("backend options")

    def add(flag: str, help_: str, **kw) -> None:
        dest = flag[2:].replace("-", "_")
        if defaults is not None:
            kw["default"] = getattr(defaults, dest)
        group.add_argument(flag, help=helps.get(dest, help_), **kw)

    add("--device", "auto, cpu, cuda or cuda:N (default auto)")
    add("--calibration", "int8: video, image or image folder to calibrate on, or 'source' for the run's own file "
        "(default: the sample clip)")
    add("--calibration-frames", f"int8: frames to calibrate on (default {d.calibration_frames})", type=int)
    add("--calibration-method", f"int8: how activation ranges are chosen (default {d.calibration_method})",
        choices=METHODS)
    add("--openvino-hint", "OpenVINO performance hint (default auto: latency for live sources, throughput for files)",
        choices=hint_choices())
    add("--trt-converter", "how the TensorRT engine is built: TensorRT's ONNX parser (default) or torch2trt",
        choices=converter_choices())
    add("--cache-dir", "where exported ONNX models and TensorRT engines are kept (default ~/.cache/stream-classifier, "
        "or $STREAM_CLASSIFIER_CACHE)")
    add("--resize", "faithful (default): the model weights' own antialiased resize, as torchvision computes it; "
        "fast: one bilinear warp without antialiasing, cheaper but it changes labels", choices=RESIZE_MODES)
    add("--threads", "intra-op threads for the CPU backends (default: one per core)", type=int)
