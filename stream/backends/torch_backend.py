"""PyTorch eager backend: inference_mode, fp16 on CUDA on request, channels-last on CPU.

torch is imported inside functions: reading this class's capabilities (config validation, `--help`)
must not cost torch's 3.5 s import.
"""

from __future__ import annotations

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

    def infer(self, batch) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            x = torch.as_tensor(batch).to(self.device, self._dtype, non_blocking=True)
            x = x.contiguous(memory_format=self._memory_format)
            logits = self._module(x)
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
        self._module = None
        if self.device.startswith("cuda"):
            self._torch.cuda.empty_cache()
