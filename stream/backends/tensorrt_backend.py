"""TensorRT backend (`--trt`): a cached engine run on torch CUDA tensors bound by address.

Build: the model's cached ONNX export → TensorRT's ONNX parser → one optimisation profile for batch
1..N → serialised engine, stored in the artifact cache under a key that covers the model, weights,
input shape, batch range, precision, TensorRT and CUDA versions, GPU name and compute capability.
With `--trt-converter torch2trt` the engine comes from torch2trt instead and is cached the same way.
Networks are built strongly typed (required from TensorRT 11, whose FP16 builder flag is gone): fp16
is an fp16 ONNX graph with fp32 input and output.

Run: like torch2trt's TRTModule, the engine reads and writes torch tensors in place by device
address, on torch's current CUDA stream, with no host copies except the logits coming back.
Written against the TensorRT 10/11 name-based Python API (set_input_shape, set_tensor_address,
execute_async_v3); not run on a GPU in this repository's CI.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import numpy as np

from models.spec import ModelRequest
from stream.backends import BackendOptions, LoadRecord, resolve_precision, timed_warmup
from stream.backends.cache import ArtifactCache, Lookup
from stream.backends.onnx_model import cache_status, get_onnx_model
from stream.backends.progress import BuildProgress
from stream.errors import UserError

WORKSPACE_BYTES = 1 << 30
CONVERTERS = ("onnx", "torch2trt")


def missing_requirements(has_tensorrt: bool, gpu_count: int, has_torch2trt: bool | None = None) -> list[str]:
    missing = []
    if not has_tensorrt:
        missing.append("the tensorrt Python package (not installed)")
    if gpu_count == 0:
        missing.append("a CUDA GPU (none is visible)")
    if has_torch2trt is False:
        missing.append("torch2trt (installs from source: github.com/NVIDIA-AI-IOT/torch2trt)")
    return missing


def unavailable_message(missing: list[str]) -> str:
    return ("--trt needs " + " and ".join(missing) + "; on a machine with an NVIDIA GPU install the GPU extras "
            "(pip install -r requirements-gpu.txt), or use --backend onnxruntime for the optimised CPU path")


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


class TensorRTBackend:
    name = "tensorrt"
    runtime_modules = ("torch", "tensorrt")  # imported before the load, so `bench` can time imports apart

    @staticmethod
    def check_available(converter: str = "onnx") -> None:
        has_t2t = importlib.util.find_spec("torch2trt") is not None if converter == "torch2trt" else None
        missing = missing_requirements(importlib.util.find_spec("tensorrt") is not None, _gpu_count(), has_t2t)
        if missing:
            raise UserError(unavailable_message(missing))

    def __init__(self, request: ModelRequest, options: BackendOptions) -> None:
        import tensorrt as trt
        import torch

        if options.trt_converter not in CONVERTERS:
            raise UserError(f"unknown --trt-converter {options.trt_converter!r}; use one of {', '.join(CONVERTERS)}")
        self.check_available(options.trt_converter)
        if options.device == "cpu":
            raise UserError("--trt runs on a CUDA GPU; drop --device cpu, or use --backend onnxruntime on CPU")
        self.device = "cuda:0" if options.device in ("auto", "cuda") else options.device
        self.input_device = self.device
        torch.cuda.set_device(self.device)
        self.precision = resolve_precision(options.precision, "fp16")
        self._trt, self._torch = trt, torch
        self._logger = _stdout_logger(trt)
        self._runtime = trt.Runtime(self._logger)  # kept: engines must not outlive their runtime
        cache = ArtifactCache(options.cache_dir)
        onnx = get_onnx_model(request, self.precision, cache)
        self.model = onnx.info
        self._input_shape = onnx.input_shape
        batch = max(1, options.max_batch)
        fields = self.engine_fields(request, onnx.input_shape, batch, options.trt_converter)
        look = cache.lookup("tensorrt", fields, ".engine")
        started = time.perf_counter()
        engine = self._deserialize(look.artifact.read_bytes()) if look.hit else None
        if look.hit and engine is None:
            look = Lookup(look.artifact, look.sidecar, False, "TensorRT could not deserialise it")
        build_s = onnx.build_s
        if engine is None:
            if look.stale:
                print(f"cached TensorRT engine for {request.name} is unusable ({look.reason}); rebuilding it",
                      flush=True)
            path, elapsed_s = self._build(request, onnx.path, batch, options.trt_converter, cache, fields)
            build_s = (build_s or 0.0) + elapsed_s
            started = time.perf_counter()
            engine = self._deserialize(path.read_bytes())
            if engine is None:
                raise UserError(f"TensorRT could not load the engine it just built ({path})")
        self._engine = engine
        self._context = engine.create_execution_context()
        self._in, self._out = self._io_names(engine)
        self._out_dtype = self._torch_dtype(engine.get_tensor_dtype(self._out))
        self.load = LoadRecord(onnx.weights_s + time.perf_counter() - started, build_s, cache_status(look),
                               str(look.artifact))
        torch.cuda.reset_peak_memory_stats(self.device)

    def engine_fields(self, request: ModelRequest, shape: tuple[int, ...], batch: int, converter: str) -> dict:
        torch = self._torch
        props = torch.cuda.get_device_properties(self.device)
        return {"artifact": "tensorrt", "model": request.name, "weights": request.weights_id(),
                "input": [*shape], "batch": [1, batch, batch], "precision": self.precision,
                "converter": converter, "tensorrt": self._trt.__version__, "cuda": torch.version.cuda,
                "gpu": props.name, "compute_capability": f"{props.major}.{props.minor}"}

    def _deserialize(self, data: bytes):
        try:
            return self._runtime.deserialize_cuda_engine(data)
        except Exception:  # noqa: BLE001 - a corrupt or foreign engine: rebuilt by the caller
            return None

    def _build(self, request, onnx_path: Path, batch: int, converter: str, cache: ArtifactCache,
               fields: dict) -> tuple[Path, float]:
        what = (f"building the TensorRT engine for {request.name} ({self.precision}, batch 1..{batch}, "
                f"{converter}): once per model, GPU and TensorRT version, cached in {cache.root}")
        started = time.perf_counter()
        with BuildProgress(what) as progress:
            build = self._build_onnx if converter == "onnx" else self._build_torch2trt
            plan = build(request, onnx_path, batch, progress)
            path = cache.store("tensorrt", fields, ".engine", lambda tmp: tmp.write_bytes(plan),
                               meta={"build_s": time.perf_counter() - started})
        return path, progress.elapsed_s

    def _build_onnx(self, request, onnx_path: Path, batch: int, progress: BuildProgress) -> bytes:
        trt = self._trt
        builder = trt.Builder(self._logger)
        flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
        network = builder.create_network(0 if flag is None else 1 << int(flag))
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise UserError(f"TensorRT's ONNX parser rejected {request.name}: {errors[:300]}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
        name = network.get_input(0).name
        c, h, w = self._input_shape
        profile = builder.create_optimization_profile()
        profile.set_shape(name, (1, c, h, w), (batch, c, h, w), (batch, c, h, w))
        config.add_optimization_profile(profile)
        monitor = _progress_monitor(trt, progress)
        if monitor is not None:
            config.progress_monitor = monitor
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise UserError(f"TensorRT could not build an engine for {request.name} (see its log lines above)")
        return bytes(plan)

    def _build_torch2trt(self, request, onnx_path: Path, batch: int, progress: BuildProgress) -> bytes:
        from torch2trt import torch2trt

        from models.registry import load_model

        torch = self._torch
        module = load_model(request.name, request.weights).module.to(self.device).eval()
        c, h, w = self._input_shape
        example = torch.zeros((batch, c, h, w), device=self.device)
        try:
            converted = torch2trt(module, [example], fp16_mode=self.precision == "fp16", max_batch_size=batch,
                                  min_shapes=[(1, c, h, w)], opt_shapes=[(batch, c, h, w)],
                                  max_shapes=[(batch, c, h, w)])
        except Exception as exc:  # noqa: BLE001 - torch2trt lags TensorRT releases; say so in one line
            raise UserError(f"torch2trt could not convert {request.name} ({type(exc).__name__}: "
                            f"{str(exc)[:160]}); use the default --trt-converter onnx") from None
        return bytes(converted.engine.serialize())

    def _io_names(self, engine) -> tuple[str, str]:
        trt = self._trt
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise UserError(f"expected an engine with one input and one output, got {inputs} → {outputs}")
        return inputs[0], outputs[0]

    def _torch_dtype(self, trt_dtype):
        trt, torch = self._trt, self._torch
        table = {trt.float32: torch.float32, trt.float16: torch.float16}
        if trt_dtype not in table:
            raise UserError(f"unsupported engine output type {trt_dtype}")
        return table[trt_dtype]

    def infer(self, batch) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            x = torch.as_tensor(batch).to(self.device, torch.float32, non_blocking=True).contiguous()
            self._context.set_input_shape(self._in, tuple(x.shape))
            out = torch.empty(tuple(self._context.get_tensor_shape(self._out)), dtype=self._out_dtype,
                              device=self.device)
            self._context.set_tensor_address(self._in, x.data_ptr())
            self._context.set_tensor_address(self._out, out.data_ptr())
            if not self._context.execute_async_v3(torch.cuda.current_stream(self.device).cuda_stream):
                raise RuntimeError("TensorRT execute_async_v3 failed")
            # The copy to the host waits for the stream, so the caller times finished work.
            return out.float().cpu().numpy()

    def warmup(self, batch_size: int, iterations: int) -> float:
        # A GPU tensor, as the GPU preprocessor hands the engine in the run.
        dummy = self._torch.zeros((batch_size, *self._input_shape), device=self.device)
        return timed_warmup(self.infer, dummy, iterations)

    def cuda_peak_mb(self) -> float | None:
        # Tensors torch allocated (frames, inputs, outputs) plus the activation memory TensorRT holds
        # for the context outside torch's allocator (device_memory_size_v2 in TensorRT 10 and 11).
        engine_bytes = getattr(self._engine, "device_memory_size_v2", 0) if self._engine is not None else 0
        return (self._torch.cuda.max_memory_allocated(self.device) + engine_bytes) / 2**20

    def close(self) -> None:
        self._context = None  # context before engine before runtime, as TensorRT requires
        self._engine = None
        self._runtime = None


def _stdout_logger(trt):
    """TensorRT's warnings and errors on stdout: stderr carries only the tool's own one-line errors."""

    shown = {trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR, trt.ILogger.Severity.WARNING}

    class StdoutLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity, msg):
            if severity in shown:
                print(f"TensorRT: {msg}", flush=True)

    return StdoutLogger()


def _progress_monitor(trt, progress: BuildProgress):
    """A TensorRT progress monitor that names the current build phase in the elapsed-time lines."""
    base = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None

    class Monitor(base):
        def __init__(self) -> None:
            base.__init__(self)

        def phase_start(self, phase_name, parent_phase, num_steps):
            progress.phase = phase_name

        def step_complete(self, phase_name, step):
            return True  # False would cancel the build

        def phase_finish(self, phase_name):
            pass

    return Monitor()
