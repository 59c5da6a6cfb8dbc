"""TensorRT backend (`--trt`): a cached engine run on torch CUDA tensors bound by address.

Build: the model's cached ONNX export → TensorRT's ONNX parser → one optimisation profile for batch
1..N → serialised engine, stored in the artifact cache under a key that covers the model, weights,
input shape, batch range, precision, TensorRT and CUDA versions, GPU name and compute capability.
With `--trt-converter torch2trt` the engine comes from torch2trt instead (TensorRT 10 only) and is
cached the same way. Building is in `tensorrt_build`.

Run: like torch2trt's TRTModule, the engine reads and writes torch tensors in place by device
address, on a CUDA stream of its own (ordered after the stream that produced the input, since
TensorRT synchronises extra on the legacy default stream and warns on every call there), inside
the device's context in whatever thread calls it (`cuda:N` is per thread in CUDA), with no host
copies except the logits coming back. Written against the TensorRT 10/11 name-based Python API
(set_input_shape, set_tensor_address, execute_async_v3); not run on a GPU in this repository's CI.
"""

from __future__ import annotations

import functools
import importlib.util
import time
from pathlib import Path

import numpy as np

from models.spec import ModelRequest
from stream.backends import BackendOptions, Capabilities, LoadRecord, resolve_precision, timed_warmup
from stream.backends.cache import ArtifactCache, Build, Unusable
from stream.backends.onnx_model import as_logits
from stream.backends.quantize import onnx_for
from stream.backends.tensorrt_build import allows_tf32, build_onnx, build_torch2trt, check_torch2trt_supported
from stream.errors import UserError


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
    # int8 is the symmetric Q/DQ model built strongly typed; torch2trt builds on TensorRT 10 only.
    capabilities = Capabilities(("fp32", "fp16", "int8"), cpu_bound=False, devices=("cuda",),
                                default_precision="fp16", converters=("onnx", "torch2trt"))

    @staticmethod
    def check_available(converter: str = "onnx") -> None:
        has_t2t = importlib.util.find_spec("torch2trt") is not None if converter == "torch2trt" else None
        missing = missing_requirements(importlib.util.find_spec("tensorrt") is not None, _gpu_count(), has_t2t)
        if missing:
            raise UserError(unavailable_message(missing))

    def __init__(self, request: ModelRequest, options: BackendOptions) -> None:
        import tensorrt as trt
        import torch

        converters = self.capabilities.converters
        if options.trt_converter not in converters:
            raise UserError(f"unknown --trt-converter {options.trt_converter!r}; use one of {', '.join(converters)}")
        if options.trt_converter == "torch2trt":
            check_torch2trt_supported(trt)
            if options.precision == "int8":
                raise UserError("--precision int8 with --trt builds from the calibrated Q/DQ ONNX model; "
                                "use the default --trt-converter onnx")
        self.check_available(options.trt_converter)
        if options.device == "cpu":
            raise UserError("--trt runs on a CUDA GPU; drop --device cpu, or use --backend onnxruntime on CPU")
        self.device = "cuda:0" if options.device in ("auto", "cuda") else options.device
        self.input_device = self.device
        self.precision = resolve_precision(self.name, options.precision)
        self._trt, self._torch = trt, torch
        self._max_batch = max(1, options.max_batch)
        with torch.cuda.device(self.device):  # the thread's current device, for this block only
            self._load(request, options)

    def _load(self, request: ModelRequest, options: BackendOptions) -> None:
        trt, torch = self._trt, self._torch
        self._logger = _stdout_logger(trt)
        self._runtime = trt.Runtime(self._logger)  # kept: engines must not outlive their runtime
        cache = ArtifactCache(options.cache_dir)
        # int8 is an explicitly quantized (Q/DQ) network: symmetric ranges, built strongly typed.
        onnx = onnx_for(request, self.precision, cache, options, "s8s8-symmetric")
        self.model = onnx.info
        self._input_shape = onnx.input_shape
        self._graph = onnx.graph
        if onnx.graph.batch is not None:  # a fixed batch: the engine's profile is that batch alone
            self._max_batch = onnx.graph.batch
        if request.onnx_only and options.trt_converter != "onnx":
            raise UserError(f"{request.custom.name} is an ONNX model: build it with the default --trt-converter onnx")
        batch = self._max_batch
        fields = self.engine_fields(request, onnx.input_shape, batch, options.trt_converter)
        fields["graph"] = [onnx.graph_key, onnx.graph.layout, onnx.graph.input_name]
        if self.precision == "int8":  # the calibration settings live in the int8 model's own cache key
            fields["int8_model"] = onnx.path.name
        got = cache.load_or_build("tensorrt", fields, ".engine", label=f"TensorRT engine for {request.name}",
                                  again="rebuilding it", read=lambda look: self._deserialize(look.artifact),
                                  build=lambda: self._build(request, onnx.path, batch, options.trt_converter, cache))
        engine, started = got.value, time.perf_counter()
        build_s = onnx.build_s if got.build_s is None else (onnx.build_s or 0.0) + got.build_s
        self._engine = engine
        self._context = engine.create_execution_context()
        # The engine's weights and the context's activations live outside torch's allocator: what the
        # device lost across the load is their footprint (other processes on the GPU can blur it).
        self._engine_bytes = max(self._free_before - torch.cuda.mem_get_info(self.device)[0],
                                 int(getattr(engine, "device_memory_size_v2", 0)))
        self._in, self._out = self._io_names(engine)
        self._out_dtype = self._torch_dtype(engine.get_tensor_dtype(self._out))
        self._stream = torch.cuda.Stream(self.device)
        self.load = LoadRecord(onnx.weights_s + got.load_s + time.perf_counter() - started, build_s, got.cache,
                               str(got.artifact))
        torch.cuda.reset_peak_memory_stats(self.device)

    def engine_fields(self, request: ModelRequest, shape: tuple[int, ...], batch: int, converter: str) -> dict:
        torch = self._torch
        props = torch.cuda.get_device_properties(self.device)
        return {"artifact": "tensorrt", "model": request.cache_name(), "weights": request.weights_id(),
                "input": [*shape], "batch": [1, batch, batch], "precision": self.precision,
                "converter": converter, "tf32": allows_tf32(self.precision) if converter == "onnx" else "default",
                "tensorrt": self._trt.__version__, "cuda": torch.version.cuda,
                "gpu": props.name, "compute_capability": f"{props.major}.{props.minor}"}

    def _deserialize(self, path: Path):
        """The engine in `path`, with the device's free memory noted just before (its footprint is measured
        across the load); a corrupt or foreign engine is Unusable, and rebuilt."""
        self._free_before = self._torch.cuda.mem_get_info(self.device)[0]
        try:
            engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        except Exception:  # noqa: BLE001 - a corrupt or foreign engine: rebuilt by the caller
            engine = None
        if engine is None:
            raise Unusable("TensorRT could not deserialise it")
        return engine

    def _built(self, path: Path):
        try:
            return self._deserialize(path)
        except Unusable:
            raise UserError(f"TensorRT could not load the engine it just built ({path})") from None

    def _build(self, request, onnx_path: Path, batch: int, converter: str, cache: ArtifactCache) -> Build:
        started = time.perf_counter()

        def write(tmp: Path, progress) -> dict:
            if converter == "onnx":
                plan = build_onnx(self._trt, self._logger, onnx_path, self._input_shape, batch, self.precision,
                                  request.name, progress, self._graph)
            else:
                from models.registry import load_model

                module = load_model(request.name, request.weights, request.custom).module.to(self.device).eval()
                plan = build_torch2trt(self._trt, module, self.device, self._input_shape, batch, self.precision,
                                       request.name)
            tmp.write_bytes(plan)
            return {"build_s": time.perf_counter() - started}

        return Build(f"building the TensorRT engine for {request.name} ({self.precision}, batch 1..{batch}, "
                     f"{converter}): once per model, GPU and TensorRT version, cached in {cache.root}", write,
                     self._built)

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
        """A pipeline batch (NCHW, on the GPU); a user's graph gets its layout and, for a fixed batch, chunks of
        it (the last padded), and its probabilities come back as logits (stream.backends.onnx_model)."""
        graph, torch = self._graph, self._torch
        fixed = graph.batch
        x = torch.as_tensor(batch)
        if graph.layout == "nhwc":
            x = x.permute(0, 2, 3, 1)
        if fixed is None or len(x) == fixed:
            return as_logits(self._execute(x), graph)
        outs = []
        for start in range(0, len(x), fixed):
            chunk = x[start:start + fixed]
            if len(chunk) < fixed:
                chunk = torch.cat([chunk, chunk.new_zeros((fixed - len(chunk), *chunk.shape[1:]))])
            outs.append(self._execute(chunk)[: min(fixed, len(x) - start)])
        return as_logits(np.concatenate(outs), graph)

    def _execute(self, batch) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode(), torch.cuda.device(self.device):
            n = int(batch.shape[0])
            if not 1 <= n <= self._max_batch:
                raise UserError(f"a batch of {n} is outside the TensorRT engine's profile (1..{self._max_batch})")
            x = torch.as_tensor(batch).to(self.device, torch.float32, non_blocking=True).contiguous()
            self._stream.wait_stream(torch.cuda.current_stream(self.device))  # the input is ready first
            x.record_stream(self._stream)  # and its memory is not reused while the engine reads it
            with torch.cuda.stream(self._stream):
                if not self._context.set_input_shape(self._in, tuple(x.shape)):
                    raise UserError(f"TensorRT rejected the input shape {tuple(x.shape)} (profile: batch "
                                    f"1..{self._max_batch} of {self._input_shape})")
                out = torch.empty(tuple(self._context.get_tensor_shape(self._out)), dtype=self._out_dtype,
                                  device=self.device)
                self._context.set_tensor_address(self._in, x.data_ptr())
                self._context.set_tensor_address(self._out, out.data_ptr())
                if not self._context.execute_async_v3(self._stream.cuda_stream):
                    raise RuntimeError("TensorRT execute_async_v3 failed")
                # The copy to the host is ordered on the engine's stream and waits for it, so the
                # caller times finished work.
                return out.float().cpu().numpy()

    def warmup(self, batch_size: int, iterations: int) -> float:
        # A GPU tensor, as the GPU preprocessor hands the engine in the run.
        dummy = self._torch.zeros((batch_size, *self._input_shape), device=self.device)
        return timed_warmup(self.infer, dummy, iterations)

    def device_peak_mb(self) -> float | None:
        # Tensors torch allocated (frames, inputs, outputs) plus what TensorRT holds outside torch's
        # allocator: the engine's weights and the context's activations, measured around the load.
        return (self._torch.cuda.max_memory_allocated(self.device) + self._engine_bytes) / 2**20

    def close(self) -> None:
        self._context = None  # context before engine before runtime, as TensorRT requires
        self._engine = None
        self._runtime = None


@functools.cache
def _stdout_logger(trt):
    """TensorRT's warnings and errors on stdout: stderr carries only the tool's own one-line errors.
    One per process: TensorRT warns when objects that exist were made with another logger."""

    shown = {trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR, trt.ILogger.Severity.WARNING}

    class StdoutLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity, msg):
            if severity in shown:
                print(f"TensorRT: {msg}", flush=True)

    return StdoutLogger()
