"""int8: a QDQ ONNX model made from the cached fp32 export, calibrated on real frames, cached like it.

ONNX Runtime's static quantizer (`quantize_static`, QDQ format, per-channel int8 weights) computes the
activation ranges from calibration frames preprocessed exactly as the run preprocesses them. Two
flavours, because the runtimes disagree on what they accept:
- CPU (onnxruntime, openvino): uint8 activations with a zero point (U8S8: x86's int8 dot-product
  instructions, AVX2's vpmaddubsw and VNNI's vpdpbusd, multiply unsigned by signed bytes).
- TensorRT: it takes only symmetric int8 Q/DQ (zero point 0) and builds it as an explicitly quantized,
  strongly typed network, so its model has int8 activations with symmetric ranges.

Layers stay in float only where measured to matter. EfficientNet-Lite0 (the model with real weights
here) keeps its stem convolution in float: quantized, it raised the mean |Δlogit| against fp32 on the
sample set from 0.104 to 0.133 and cut the top-5 overlap from 95.4 % to 94.6 %, and keeping it cost no
measurable speed. Every other model is quantized whole: AlexNet's accuracy cannot be measured here
(random weights), and its first convolution in float cost 30 % of its int8 speed at batch 8 (1.16 →
1.62 ms/img). Calibration is deterministic for the same frames and method, so the cache key names the
frames' content hash, their count, the method and the layers kept in float.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

from models.spec import LITE0, GraphIO, ModelRequest, file_sha256, package_version
from stream.backends.cache import ArtifactCache, Build
from stream.backends.onnx_model import OnnxModel, get_onnx_model, graph_of, onnx_fields, read_onnx, to_layout
from stream.errors import UserError

METHODS = ("minmax", "entropy", "percentile")
DEFAULT_METHOD = "minmax"
DEFAULT_FRAMES = 64
FLOAT_LAYERS = {LITE0: "first-conv"}  # model → layers kept in float (measured: see above); others "none"


@dataclass(frozen=True)
class Calibration:
    """Where the calibration frames come from: a video, an image or a folder of images."""

    path: str | None = None  # None: the sample clip
    frames: int = DEFAULT_FRAMES
    method: str = DEFAULT_METHOD

    def resolved(self, cache_dir: str | None) -> Calibration:
        if self.method not in METHODS:
            raise UserError(f"unknown --calibration-method {self.method!r}; use one of {', '.join(METHODS)}")
        if not 1 <= self.frames <= 4096:
            raise UserError(f"--calibration-frames {self.frames}: use 1 to 4096 frames")
        if self.path is None:
            from stream.media.sample import sample_clip

            return Calibration(str(sample_clip(cache_dir)), self.frames, self.method)
        if not Path(self.path).exists():
            raise UserError(f"--calibration {self.path}: no such file or folder; int8 needs real frames to "
                            "calibrate on (a video, an image or a folder of images)")
        return self


def calibration_id(path: str) -> str:
    """A content hash of the calibration input, so a changed file is a cache miss."""
    p = Path(path)
    if p.is_dir():
        from stream.media.sources import image_files

        files = image_files(p)
        digest = hashlib.sha256()
        for f in files:
            digest.update(f"{f.name}:{_digest(str(f.resolve()), *_stat(f))}\n".encode())
        return "folder-sha256:" + digest.hexdigest()
    return "sha256:" + _digest(str(p.resolve()), *_stat(p))


def _stat(p: Path) -> tuple[int, int]:
    s = p.stat()
    return s.st_size, s.st_mtime_ns


@functools.cache
def _digest(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


def float_layers(model: str) -> str:
    return FLOAT_LAYERS.get(model, "none")


def int8_fields(request: ModelRequest, cal: Calibration, flavour: str) -> dict:
    return {**onnx_fields(request, "int8"), "calibration": calibration_id(cal.path),
            "calibration_frames": cal.frames, "method": cal.method, "flavour": flavour,
            "float_layers": float_layers(request.cache_name()),
            "quantizer": f"onnxruntime-{package_version('onnxruntime')}"}


def get_int8_model(request: ModelRequest, cache: ArtifactCache, calibration: Calibration, flavour: str,
                   cache_dir: str | None = None) -> OnnxModel:
    """The cached int8 model for these calibration settings, quantized now on a miss. `flavour` is
    "u8s8" (the CPU runtimes) or "s8s8-symmetric" (TensorRT)."""
    cal = calibration.resolved(cache_dir)
    fp32: OnnxModel | None = None

    def build() -> Build:
        nonlocal fp32
        from stream.media.stills import load_frames
        from stream.pipeline.preprocess import make_preprocessor

        images = load_frames(cal.path, cal.frames, flag="--calibration")  # a bad set fails before the export
        fp32 = get_onnx_model(request, "fp32", cache)
        frames = make_preprocessor(fp32.info.preprocess, "cpu")(images)  # the run's own (faithful) preprocessing
        source = fp32.path
        return Build(f"quantizing {request.name} to int8 ({cal.method}, {len(frames)} calibration frames from "
                     f"{cal.path}): once per model and calibration set, cached in {cache.root}",
                     lambda tmp, progress: quantize(source, tmp, frames, cal.method, flavour,
                                                    float_layers(request.cache_name()), graph_of(request)),
                     lambda path: (fp32.info, fp32.input_shape),
                     {"model": fp32.info.to_dict(), "input_shape": list(fp32.input_shape),
                      "calibration_path": cal.path})

    got = cache.load_or_build("onnx", int8_fields(request, cal, flavour), ".onnx",
                              label=f"int8 model for {request.name}", again="quantizing it again", read=read_onnx,
                              build=build, changed="calibration settings")
    info, shape = got.value
    if fp32 is None:  # a hit
        return OnnxModel(got.artifact, info, shape, 0.0, None, got.cache, graph_of(request))
    return OnnxModel(got.artifact, info, shape, fp32.weights_s, (fp32.build_s or 0.0) + (got.build_s or 0.0),
                     got.cache, graph_of(request))


def quantize(fp32_path: Path, out: Path, frames, method: str, flavour: str, keep_float: str = "none",
             graph: GraphIO = GraphIO()) -> None:
    """`frames`: the run's NCHW batch; fed to the graph in its own layout, input name and batch size."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    step = graph.batch or 1
    feeds = [to_layout(frames[i:i + step], graph) for i in range(0, len(frames) - step + 1, step)]
    if not feeds:
        raise UserError(f"int8 calibration needs at least {step} frames for a model with a fixed batch of {step}")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.i = 0

        def get_next(self):
            if self.i >= len(feeds):
                return None
            self.i += 1
            return {graph.input_name: feeds[self.i - 1]}

    prepared = out.with_name(out.stem + ".prepared.onnx")
    # The export keeps its weights in a companion .data file: load them fully first, or the
    # pre-processor's temporary copy cannot find them.
    quant_pre_process(onnx.load(str(fp32_path)), str(prepared), skip_symbolic_shape=True)
    try:
        nodes = onnx.load(str(prepared), load_external_data=False).graph.node
        first_conv = next((n.name for n in nodes if n.op_type == "Conv"), None) if keep_float == "first-conv" else None
        symmetric = flavour == "s8s8-symmetric"
        method_enum = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                       "percentile": CalibrationMethod.Percentile}[method]
        quantize_static(str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=method_enum,
                        nodes_to_exclude=[first_conv] if first_conv else None,
                        extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True})
    finally:
        prepared.unlink(missing_ok=True)
        for leftover in out.parent.glob(out.stem + ".prepared*"):
            leftover.unlink(missing_ok=True)


def onnx_for(request: ModelRequest, precision: str, cache: ArtifactCache, options, flavour: str = "u8s8") -> OnnxModel:
    """The ONNX model a backend runs at `precision`: the export itself, or its calibrated int8 form."""
    if precision != "int8":
        return get_onnx_model(request, precision, cache)
    return get_int8_model(request, cache, options.calibration or Calibration(), flavour, options.cache_dir)
