"""Preprocessing on the backend's GPU: upload the crop's source region as uint8, resample it there.

Faithful mode applies the same Pillow weights as the host path (`stream.pipeline.resample`), as two dense
matrix products per channel (`rows @ region @ colsᵀ`): cheap on a GPU, exact in float32, and the
same definition as the CPU path rather than a second approximation. Fast mode (`--resize fast`) is
one bilinear `grid_sample` of the crop box, without antialiasing, like the host's fast mode.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F

from models.spec import PreprocessSpec
from stream.pipeline.resample import SizeCache, crop_box, crop_plan, normalisation


class _DenseResize:
    def __init__(self, height: int, width: int, spec: PreprocessSpec, device: torch.device) -> None:
        plan = crop_plan(height, width, spec)
        self.rows, self.cols = slice(plan.rows.start, plan.rows.stop), slice(plan.cols.start, plan.cols.stop)
        self.vertical = torch.from_numpy(plan.rows.weights).to(device, torch.float32)  # crop × rows
        self.horizontal = torch.from_numpy(plan.cols.weights.T.copy()).to(device, torch.float32)  # cols × crop

    def region(self, image: np.ndarray) -> np.ndarray:
        return image[self.rows, self.cols]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """N×3×rows×cols float → N×3×crop×crop, rounded like PIL's 8-bit output."""
        # Full float32 under torch's default matmul precision ("highest"); TF32, if a user turns it on,
        # rounds the weights to 10 bits: about 0.1 of a pixel step, still far inside the goals.
        out = self.vertical @ x @ self.horizontal
        return out.add_(0.5).floor_().clamp_(0, 255)


class TorchPreprocessor:
    def __init__(self, spec: PreprocessSpec, device: str, resize: str = "faithful") -> None:
        self.spec, self.device, self.resize = spec, torch.device(device), resize
        scale, shift = normalisation(spec)
        self._scale = torch.from_numpy(scale).unsqueeze(0).to(self.device)  # 1×3×1×1, broadcast over the batch
        self._shift = torch.from_numpy(shift).unsqueeze(0).to(self.device)
        self._plans, self._grids = SizeCache(), SizeCache()

    def _plan(self, height: int, width: int) -> _DenseResize:
        return self._plans.get((height, width), lambda: _DenseResize(height, width, self.spec, self.device))

    def _grid(self, height: int, width: int) -> torch.Tensor:
        def make() -> torch.Tensor:
            size = self.spec.crop
            x0, y0, sx, sy = crop_box(height, width, self.spec.resize, size)
            steps = torch.arange(size, dtype=torch.float64) + 0.5
            xs = steps * sx - 0.5 + x0  # source pixel coordinates, as in the host fast path's affine map
            ys = steps * sy - 0.5 + y0
            # grid_sample with align_corners=False maps pixel p to (2p + 1) / size - 1.
            gx = (2 * xs + 1) / width - 1
            gy = (2 * ys + 1) / height - 1
            grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1)
            return grid.unsqueeze(0).to(self.device, torch.float32)

        return self._grids.get((height, width), make)

    def _upload(self, images: list[np.ndarray], device: torch.device) -> torch.Tensor:
        host = torch.from_numpy(np.stack(images))  # N×H×W×3 uint8: the smallest thing to upload
        planes = host.to(device, non_blocking=True).permute(0, 3, 1, 2)
        return (planes if self.spec.channels == "bgr" else planes.flip(1)).float()  # BGR → the model's order

    def _batch(self, images: list[np.ndarray]) -> torch.Tensor:
        height, width = images[0].shape[:2]
        if self.resize == "faithful":
            plan = self._plan(height, width)
            out = plan(self._upload([plan.region(im) for im in images], self.device))
        else:
            grid = self._grid(height, width).expand(len(images), -1, -1, -1)
            out = F.grid_sample(self._upload(images, self.device), grid, mode="bilinear", padding_mode="border",
                                align_corners=False)
        return out * self._scale + self._shift

    @torch.inference_mode()
    def __call__(self, images: list[np.ndarray]) -> torch.Tensor:
        with torch.cuda.device(self.device) if self.device.type == "cuda" else contextlib.nullcontext():
            if all(im.shape == images[0].shape for im in images):
                out = self._batch(images).contiguous()
            else:  # an image folder can mix sizes: each size gets its own plan
                out = torch.cat([self._batch([im]) for im in images]).contiguous()
            if self.device.type == "cuda":
                # Kernels run asynchronously: without waiting here their time would be counted as the
                # next stage's (inference), and model-only fps would absorb preprocessing.
                torch.cuda.current_stream(self.device).synchronize()
        return out
