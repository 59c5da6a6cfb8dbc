"""OpenVINO backend (`--backend openvino`): the cached ONNX export (fp32, or the int8 Q/DQ model) on
OpenVINO's CPU plugin.

Live sources compile with the LATENCY hint (one request, every core on one frame); files with the
THROUGHPUT hint, where the plugin runs several streams of inference at once: a batch is split into one
contiguous chunk per stream, each chunk is started on an infer request of its own (a fixed pool, as an
`AsyncInferQueue` holds, but without its Python callbacks) so the chunks run at once, and their logits
are written back at their offsets: results stay in frame order.

The compiled model is exported once (`CompiledModel.export_model`) into the project's artifact cache,
keyed on the ONNX model, the OpenVINO version, the CPU, the hint and the thread count, with the same
checksummed sidecar as the other artifacts; a warm start imports it instead of compiling the ONNX model.
"""

from __future__ import annotations

import platform
import time

import numpy as np

from models.spec import ModelRequest, package_version
from stream.backends import BackendOptions, Capabilities, LoadRecord, resolve_precision, timed_warmup
from stream.backends.cache import ArtifactCache, Build, Lookup, Unusable
from stream.backends.onnx_model import run_graph
from stream.backends.quantize import onnx_for
from stream.backends.registry import require_package
from stream.cores import available_cores
from stream.errors import UserError


def choose_hint(hint: str, max_batch: int) -> str:
    """auto: latency when frames come one at a time (live sources run at batch 1), else throughput."""
    hints = OpenVinoBackend.capabilities.hints
    if hint not in hints:
        raise UserError(f"unknown OpenVINO hint {hint!r}; use {', '.join(hints)}")
    if hint != "auto":
        return hint
    return "latency" if max_batch <= 1 else "throughput"


def split(n: int, parts: int) -> list[tuple[int, int]]:
    """`n` frames as at most `parts` contiguous (start, stop) chunks of near-equal size."""
    parts = max(1, min(parts, n))
    bounds = [round(i * n / parts) for i in range(parts + 1)]
    return [(a, b) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


class OpenVinoBackend:
    name = "openvino"
    runtime_modules = ("openvino",)
    input_device = "cpu"
    device = "cpu"
    # fp16 is not offered on the CPU plugin; auto hint: latency at batch 1, else throughput (choose_hint).
    capabilities = Capabilities(("fp32", "int8"), cpu_bound=True, devices=("cpu",),
                                hints=("auto", "latency", "throughput"))

    @staticmethod
    def check_available() -> None:
        require_package("openvino", "openvino")

    def __init__(self, request: ModelRequest, options: BackendOptions) -> None:
        import openvino as ov
        import openvino.properties as props
        import openvino.properties.hint as hints

        if options.device.startswith("cuda"):
            raise UserError("--backend openvino runs on the CPU here; drop --device, or use --trt for an "
                            "NVIDIA GPU")
        self.precision = resolve_precision(self.name, options.precision)
        self.hint = choose_hint(options.hint, options.max_batch)
        self.threads = options.threads or available_cores()
        cache = ArtifactCache(options.cache_dir)
        onnx = onnx_for(request, self.precision, cache, options)
        self.model = onnx.info
        self._input_shape = onnx.input_shape
        self._graph = onnx.graph
        mode = hints.PerformanceMode.LATENCY if self.hint == "latency" else hints.PerformanceMode.THROUGHPUT
        # On CPUs with bf16 units the plugin's default is bf16 arithmetic, with fully connected layers
        # quantized on the fly: an "fp32" model would not be fp32. Both are switched off; int8 is the
        # Q/DQ model's own.
        config = {hints.performance_mode: mode, props.inference_num_threads: self.threads,
                  hints.inference_precision: ov.Type.f32, hints.dynamic_quantization_group_size: 0}
        core = ov.Core()
        fields = {"artifact": "openvino", "onnx": onnx.graph_key, "openvino": package_version("openvino"),
                  "cpu": _cpu_name(), "isa": list(core.get_property("CPU", props.device.capabilities)),
                  "hint": self.hint, "threads": self.threads, "arithmetic": "f32, no dynamic quantization"}
        compiled = None

        def build() -> Build:
            def compile_and_export(tmp, progress) -> None:
                nonlocal compiled
                try:
                    graph = core.read_model(str(onnx.path))
                except Exception as exc:  # noqa: BLE001 - a graph OpenVINO cannot read: one line
                    first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
                    raise UserError(f"OpenVINO could not read {onnx.path.name} ({first})") from None
                compiled = core.compile_model(graph, "CPU", config)
                blob = compiled.export_model()
                tmp.write_bytes(blob.getvalue() if hasattr(blob, "getvalue") else bytes(blob))

            return Build(f"compiling {request.name} ({self.precision}) for OpenVINO ({self.hint}): once, cached in "
                         f"{cache.root}", compile_and_export, lambda path: compiled)

        got = cache.load_or_build("openvino", fields, ".blob", label=f"OpenVINO model for {request.name}",
                                  again="compiling it again", read=lambda look: self._import(core, look, config),
                                  build=build)
        started = time.perf_counter()
        self._compiled = got.value
        self.streams = int(got.value.get_property(props.optimal_number_of_infer_requests))
        self._requests = [got.value.create_infer_request() for _ in range(self.streams)]
        # The compile is build time, not load time.
        weights_s = onnx.weights_s + got.load_s + time.perf_counter() - started
        build_s = onnx.build_s if got.build_s is None else (onnx.build_s or 0.0) + got.build_s
        self.load = LoadRecord(weights_s, build_s, got.cache, str(got.artifact))

    @staticmethod
    def _import(core, look: Lookup, config: dict):
        try:
            return core.import_model(look.artifact.read_bytes(), "CPU", config)
        except Exception:  # noqa: BLE001 - a blob from another build or a corrupt file: compiled again
            raise Unusable("OpenVINO could not import it") from None

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return run_graph(batch, self._graph, self._infer)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        """The graph's own input (its layout and batch) → its output."""
        if len(self._requests) == 1:
            # One request (the latency hint): its synchronous infer runs the graph on this thread, so no wake-up
            # of the plugin's worker sits between frames and the model's CPU is the inference thread's. At int8
            # batch 1 with one intra-op thread: 92-95 → 99 fps here, AlexNet, mp4v written.
            request = self._requests[0]
            request.infer({0: batch})
            return np.array(request.get_output_tensor(0).data, np.float32)
        chunks = split(len(batch), len(self._requests))
        for request, (a, b) in zip(self._requests, chunks, strict=False):
            request.start_async({0: batch[a:b]})
        # Each chunk has a request of its own, so its output is its own until the next call; `wait`
        # releases the GIL. (No Python completion callbacks: OpenVINO's threads taking the GIL for them
        # deadlocked against the compiled model's destructor.)
        out = np.empty((len(batch), len(self.model.categories)), np.float32)
        for request, (a, b) in zip(self._requests, chunks, strict=False):
            request.wait()
            out[a:b] = request.get_output_tensor(0).data
        return out

    def warmup(self, batch_size: int, iterations: int) -> float:
        return timed_warmup(self.infer, np.zeros((batch_size, *self._input_shape), np.float32), iterations)

    def device_peak_mb(self) -> float | None:
        return None

    def close(self) -> None:
        self._requests = []
        self._compiled = None


def _cpu_name() -> str:
    """What the compiled blob was built for: the plugin picks kernels by the CPU's instruction set."""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
