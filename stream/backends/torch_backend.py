"""PyTorch eager backend: inference_mode, fp16 on CUDA on request, channels-last on CPU."""

from __future__ import annotations

import numpy as np
import torch

from models.registry import load_model
from models.spec import ModelRequest
from stream.backends import BackendOptions, LoadRecord, check_precision, resolve_precision, timed_warmup
from stream.errors import UserError


def resolve_device(requested: str) -> str:
    if requested == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is visible to PyTorch; use --device cpu (or auto)")
    if requested != "cpu" and not requested.startswith("cuda"):
        raise UserError(f"unknown device {requested!r}; use auto, cpu or cuda")
    return "cuda:0" if requested == "cuda" else requested


class TorchBackend:
    name = "torch"
    runtime_modules = ("torch", "torchvision")  # imported before the load, so `bench` can time imports apart

    def __init__(self, request: ModelRequest, options: BackendOptions) -> None:
        self.device = resolve_device(options.device)
        self.input_device = self.device
        check_precision(self.name, options.precision)
        self.precision = resolve_precision(options.precision, "fp32")
        if self.precision == "fp16" and not self.device.startswith("cuda"):
            raise UserError("--precision fp16 needs a CUDA GPU (CPU fp16 is slower, not faster); use fp32 on CPU")
        if options.threads:
            torch.set_num_threads(options.threads)
        model = load_model(request.name, request.weights)
        self.model = model.info
        self._dtype = torch.float16 if self.precision == "fp16" else torch.float32
        # Channels-last lets oneDNN skip layout reorders for the convolutions on CPU.
        self._memory_format = torch.channels_last if self.device == "cpu" else torch.contiguous_format
        self._module = model.module.to(self.device, self._dtype, memory_format=self._memory_format).eval()
        self._input_size = model.preprocess.crop
        self.load = LoadRecord(model.load_s, None, "not used")
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats(self.device)

    @torch.inference_mode()
    def infer(self, batch) -> np.ndarray:
        x = torch.as_tensor(batch).to(self.device, self._dtype, non_blocking=True)
        x = x.contiguous(memory_format=self._memory_format)
        logits = self._module(x)
        # .cpu() waits for the device, so the caller's clock sees finished work.
        return logits.float().cpu().numpy()

    def warmup(self, batch_size: int, iterations: int) -> float:
        dummy = np.zeros((batch_size, 3, self._input_size, self._input_size), np.float32)
        return timed_warmup(self.infer, dummy, iterations)

    def device_peak_mb(self) -> float | None:
        if not self.device.startswith("cuda"):
            return None
        return torch.cuda.max_memory_allocated(self.device) / 2**20

    def close(self) -> None:
        self._module = None
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()
