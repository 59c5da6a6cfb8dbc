"""PyTorch eager backend: inference_mode, fp16 on CUDA on request, channels-last on CPU.

torch is imported inside functions: reading this class's capabilities (config validation, `--help`)
must not cost torch's 3.5 s import.

On CUDA every model call runs on one thread of the backend's own (`DeviceThread`): PyTorch keeps cuDNN's
execution plans in thread-local caches (aten/src/ATen/native/cudnn), so the plans the warm-up built on the
loading thread were built again by the inference thread on the run's first frames. On an H200,
EfficientNet-Lite0 at fp16 takes 1.5-2.7 s to build them: `bench`'s 150-frame pipeline run counted that and
showed 51 fps, where the same model at fp32 (plans built in 0.2 s) showed 162.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from queue import SimpleQueue

import numpy as np

from models.spec import ModelRequest
from stream.backends import BackendOptions, Capabilities, LoadRecord, resolve_precision, timed_warmup
from stream.backends.onnx_model import as_logits, graph_of
from stream.errors import UserError


def resolve_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is visible to PyTorch; use --device cpu (or auto)")
    if requested != "cpu" and not requested.startswith("cuda"):
        raise UserError(f"unknown device {requested!r}; use auto, cpu or cuda")
    return "cuda:0" if requested == "cuda" else requested


def check_runs(request: ModelRequest) -> None:
    """PyTorch runs torchvision architectures (and EfficientNet-Lite0); an ONNX file is one line, before loading."""
    if request.onnx_only:
        raise UserError(f"--backend torch runs torchvision architectures; {request.custom.name} is an ONNX model "
                        f"({request.custom.onnx.rsplit('/', 1)[-1]}): use --backend onnxruntime or openvino")


class DeviceThread:
    """Calls run on this one thread, in order; the caller waits for each (its exception is raised to it)."""

    def __init__(self, name: str = "model-torch") -> None:  # "model-": the model's CPU (stream.observe.cpu)
        self._calls: SimpleQueue = SimpleQueue()
        # Daemon: a call stuck in the driver must not keep the process alive (the run's threads are daemons too).
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def call(self, fn: Callable, *args):
        if threading.current_thread() is self._thread:
            return fn(*args)
        done: Future = Future()
        self._calls.put((fn, args, done))
        return done.result()

    def _serve(self) -> None:
        while (item := self._calls.get()) is not None:
            fn, args, done = item
            try:
                done.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - the caller's, raised by its result()
                done.set_exception(exc)

    def close(self) -> None:
        self._calls.put(None)
        self._thread.join(timeout=5)


def own_thread(device: str) -> bool:
    """Whether model calls need a thread of their own on this device (cuDNN's per-thread plans)."""
    return device.startswith("cuda")


class TorchBackend:
    name = "torch"
    runtime_modules = ("torch", "torchvision")  # imported before the load, so `bench` can time imports apart
    # Not cpu_bound: PyTorch keeps its own thread pool, which the run does not plan; fp16 needs CUDA.
    capabilities = Capabilities(("fp32", "fp16"), cpu_bound=False, devices=("cpu", "cuda"))

    def __init__(self, request: ModelRequest, options: BackendOptions) -> None:
        check_runs(request)
        import torch

        from models.registry import load_model

        self._torch = torch
        self.device = resolve_device(options.device)
        self.input_device = self.device
        self.precision = resolve_precision(self.name, options.precision)
        if self.precision == "fp16" and not self.device.startswith("cuda"):
            raise UserError("--precision fp16 needs a CUDA GPU (CPU fp16 is slower, not faster); use fp32 on CPU")
        if options.threads:
            torch.set_num_threads(options.threads)
        model = load_model(request.name, request.weights, request.custom)
        self.model = model.info
        self._graph = graph_of(request)
        self._dtype = torch.float16 if self.precision == "fp16" else torch.float32
        # Channels-last lets oneDNN skip layout reorders for the convolutions on CPU.
        self._memory_format = torch.channels_last if self.device == "cpu" else torch.contiguous_format
        self._module = model.module.to(self.device, self._dtype, memory_format=self._memory_format).eval()
        self._input_size = model.preprocess.crop
        self.load = LoadRecord(model.load_s, None, "not used")
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats(self.device)
        # Started here, while the run counts threads born now as the model's (stream.observe.cpu).
        self._device_thread = DeviceThread() if own_thread(self.device) else None
        # On the GPU every call has the run's batch shape: cuDNN builds its plans per input shape, and at fp16 a new
        # one (a file's last, partial batch; a live run's quiet moment) takes ~1.5 s of plans on an H200 (the warm-up's
        # figure), which a 150-frame run at batch 8 counted: 79 fps against 470 at fp32. Padding rows cost a
        # launch-bound GPU next to nothing.
        self._pad_to = options.max_batch if self._device_thread is not None else 1

    def infer(self, batch) -> np.ndarray:
        if self._device_thread is not None:
            return self._device_thread.call(self._infer, batch)
        return self._infer(batch)

    def _infer(self, batch) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            x = torch.as_tensor(batch)
            count = x.shape[0]
            if count < self._pad_to:
                x = torch.cat([x, x.new_zeros((self._pad_to - count, *x.shape[1:]))])
            x = x.to(self.device, self._dtype, non_blocking=True)
            x = x.contiguous(memory_format=self._memory_format)
            logits = self._module(x)[:count]
            # .cpu() waits for the device, so the caller's clock sees finished work.
            return as_logits(logits.float().cpu().numpy(), self._graph)

    def warmup(self, batch_size: int, iterations: int) -> float:
        dummy = np.zeros((batch_size, 3, self._input_size, self._input_size), np.float32)
        return timed_warmup(self.infer, dummy, iterations)

    def device_peak_mb(self) -> float | None:
        if not self.device.startswith("cuda"):
            return None
        return self._torch.cuda.max_memory_allocated(self.device) / 2**20

    def close(self) -> None:
        if self._device_thread is not None:
            self._device_thread.close()
        self._module = None
        if self.device.startswith("cuda"):
            self._torch.cuda.empty_cache()
