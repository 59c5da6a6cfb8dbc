"""Preprocessing on the backend's GPU: upload uint8 frames, then crop/resize/normalise there.

The geometry is the CPU path's (`preprocess.crop_box`, cv2's pixel-centre convention), sampled with
one bilinear `grid_sample`, so both paths feed the model the same pixels within interpolation noise
(tested on CPU tensors against the OpenCV path).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from models.spec import PreprocessSpec
from stream.preprocess import crop_box, normalisation


class TorchPreprocessor:
    def __init__(self, spec: PreprocessSpec, device: str) -> None:
        self.spec, self.device = spec, torch.device(device)
        scale, shift = normalisation(spec)
        self._scale = torch.from_numpy(scale).unsqueeze(0).to(self.device)  # 1×3×1×1, broadcast over the batch
        self._shift = torch.from_numpy(shift).unsqueeze(0).to(self.device)
        self._grids: dict[tuple[int, int], torch.Tensor] = {}

    def _grid(self, height: int, width: int) -> torch.Tensor:
        key = (height, width)
        if key not in self._grids:
            size = self.spec.crop
            x0, y0, sx, sy = crop_box(height, width, self.spec.resize, size)
            steps = torch.arange(size, dtype=torch.float64) + 0.5
            xs = steps * sx - 0.5 + x0  # source pixel coordinates, as in the CPU path's affine map
            ys = steps * sy - 0.5 + y0
            # grid_sample with align_corners=False maps pixel p to (2p + 1) / size - 1.
            gx = (2 * xs + 1) / width - 1
            gy = (2 * ys + 1) / height - 1
            grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1)
            self._grids[key] = grid.unsqueeze(0).to(self.device, torch.float32)
        return self._grids[key]

    def _batch(self, images: list[np.ndarray]) -> torch.Tensor:
        host = torch.from_numpy(np.stack(images))  # N×H×W×3 uint8: the smallest thing to upload
        x = host.to(self.device, non_blocking=True).permute(0, 3, 1, 2).flip(1).float()  # BGR → RGB
        grid = self._grid(*images[0].shape[:2]).expand(len(images), -1, -1, -1)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return out * self._scale + self._shift

    @torch.inference_mode()
    def __call__(self, images: list[np.ndarray]) -> torch.Tensor:
        if all(im.shape == images[0].shape for im in images):
            return self._batch(images).contiguous()
        # An image folder can mix sizes: each size gets its own grid.
        return torch.cat([self._batch([im]) for im in images]).contiguous()
