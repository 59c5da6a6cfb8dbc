"""ONNX Runtime backend: the optimised CPU path, and CUDA/TensorRT execution providers with onnxruntime-gpu.

Session settings from measurements on a 2-core machine: full graph optimisation; intra-op threads
one per available core; spinning off, because spinning workers steal the cores that decode and
encode need (threaded 720p pipeline ≈ 35 → 40 fps).
"""

from __future__ import annotations

import time

import numpy as np

from models.spec import ModelRequest, package_version
from stream.backends import BackendOptions, Capabilities, LoadRecord, resolve_precision, timed_warmup
from stream.backends.cache import ArtifactCache
from stream.backends.onnx_model import OnnxModel, run_graph
from stream.backends.quantize import onnx_for
from stream.backends.registry import require_package
from stream.cores import available_cores
from stream.errors import UserError

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def choose_providers(device: str, available: list[str]) -> tuple[list[str], str]:
    """Execution providers for `device` given what this onnxruntime build offers, and the device used."""
    gpu = [p for p in GPU_PROVIDERS if p in available]
    if device == "cpu":
        return ["CPUExecutionProvider"], "cpu"
    if device.startswith("cuda"):
        if not gpu:
            raise UserError(f"--device {device} with --backend onnxruntime needs onnxruntime-gpu and a CUDA GPU "
                            f"(this onnxruntime offers {', '.join(available)}); see requirements-gpu.txt, "
                            "or use --device cpu")
        return [*gpu, "CPUExecutionProvider"], device if ":" in device else "cuda:0"
    return ([*gpu, "CPUExecutionProvider"], "cuda:0") if gpu else (["CPUExecutionProvider"], "cpu")


class OnnxRuntimeBackend:
    name = "onnxruntime"
    runtime_modules = ("onnxruntime",)  # imported before the load, so `bench` can time imports apart
    input_device = "cpu"  # the session takes host arrays; a GPU provider uploads them itself
    # fp16 needs a GPU provider (onnxruntime-gpu); int8 is the calibrated Q/DQ model.
    capabilities = Capabilities(("fp32", "fp16", "int8"), cpu_bound=True, devices=("cpu", "cuda"))

    @staticmethod
    def check_available() -> None:
        require_package("onnxruntime", "onnxruntime")

    def __init__(self, request: ModelRequest, options: BackendOptions) -> None:
        import onnxruntime as ort

        providers, self.device = choose_providers(options.device, ort.get_available_providers())
        self.precision = resolve_precision(self.name, options.precision)
        if self.precision == "fp16" and self.device == "cpu":
            raise UserError("--precision fp16 with ONNX Runtime needs a GPU provider; on CPU use fp32")
        cache = ArtifactCache(options.cache_dir)
        # A GPU provider (TensorRT's) accepts only symmetric int8 Q/DQ.
        onnx = onnx_for(request, self.precision, cache, options, "u8s8" if self.device == "cpu" else "s8s8-symmetric")
        self.model = onnx.info
        started = time.perf_counter()
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.intra_op_num_threads = options.threads or available_cores()
        so.inter_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.log_severity_level = 3  # errors only: stderr is kept for the tool's own one-line errors
        self._cache, self._engines = cache, None
        provider_options = [self._provider_options(p, onnx, ort.__version__) for p in providers]
        try:
            self._session = ort.InferenceSession(str(onnx.path), so, providers=providers,
                                                 provider_options=provider_options)
        except Exception as exc:  # noqa: BLE001 - a bad file or provider failure: one line, not a trace
            reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
            if request.onnx_only and onnx.cache == "not used":  # the user's own file
                raise UserError(f"ONNX Runtime could not load {onnx.path.name} ({reason})") from None
            raise UserError(f"ONNX Runtime could not load {onnx.path} ({reason}); "
                            "delete it to have it exported again") from None
        self._input = self._session.get_inputs()[0].name
        self._input_shape = onnx.input_shape
        self._graph = onnx.graph
        self.threads = so.intra_op_num_threads
        # One session takes run() calls from several threads at once, each on its caller's thread at one intra-op
        # thread (stream.pipeline.inference: model calls side by side); a GPU provider queues them on one device.
        self.parallel_calls = self.device == "cpu"
        self.load = LoadRecord(onnx.weights_s + time.perf_counter() - started, onnx.build_s, onnx.cache,
                               str(onnx.path))

    def _provider_options(self, provider: str, onnx: OnnxModel, ort_version: str) -> dict:
        if provider != "TensorrtExecutionProvider":
            return {}
        # ONNX Runtime loads, unchecked, any engine file in its cache folder whose name matches what it computes
        # (a hash of the graph; the GPU's compute capability in recent versions): the folder is keyed on the rest
        # (ort_engine_fields), and its files are sealed with a sidecar by close().
        self._engines = ort_engine_fields(onnx, self.precision, ort_version, self.device)
        return {"trt_engine_cache_enable": "True",
                "trt_engine_cache_path": str(self._cache.folder("ort-tensorrt", self._engines))}

    def infer(self, batch: np.ndarray) -> np.ndarray:
        # run() returns host arrays, so the device work is finished when it returns.
        return run_graph(batch, self._graph, lambda x: self._session.run(None, {self._input: x})[0])

    def warmup(self, batch_size: int, iterations: int) -> float:
        return timed_warmup(self.infer, np.zeros((batch_size, *self._input_shape), np.float32), iterations)

    def device_peak_mb(self) -> float | None:
        return None  # ONNX Runtime does not expose its CUDA arena's peak through the Python API

    def close(self) -> None:
        self._session = None  # first: the engines it built are written and closed
        if self._engines is not None:
            self._cache.seal("ort-tensorrt", self._engines)
            self._engines = None


def ort_engine_fields(onnx: OnnxModel, precision: str, ort_version: str, device: str) -> dict:
    """What ONNX Runtime's TensorRT engines depend on beyond what it checks itself: the exported (or int8)
    model, whose cache name is already a key of the model, weights and calibration; the runtimes' versions."""
    return {"artifact": "ort-tensorrt", "model": onnx.info.name, "onnx": onnx.path.name, "precision": precision,
            "onnxruntime": ort_version, "tensorrt": package_version("tensorrt"), "device": device}
