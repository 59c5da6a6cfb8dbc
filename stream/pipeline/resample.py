"""Pillow's antialiased resampling weights for torchvision's Resize + CenterCrop, for the crop alone.

torchvision's classification transforms (`weights.transforms()`) resize the whole image with PIL,
whose filter widens with the downscale factor so that every source pixel counts, and then crop the
centre. Each output pixel of the crop depends on a band of source pixels only, so the weights below
are Pillow's own (`precompute_coeffs` in libImaging/Resample.c) for just the crop's outputs: a
preprocessor that applies them sees the pixels the model's weights were trained and scored on,
without resizing the rest of the frame. Plain numpy: the CPU path applies them as sparse matrices,
the GPU path as dense ones, so both share this one definition (with the crop box of the fast paths
and the normalisation coefficients).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from models.spec import PreprocessSpec
from stream.errors import UserError

# Pillow's bicubic uses a = -0.5 (Keys); its bilinear is a triangle. Support is in output pixels.
_A = -0.5


def _triangle(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    return np.where(x < 1.0, 1.0 - x, 0.0)


def _cubic(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    near = ((_A + 2.0) * x - (_A + 3.0)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * _A
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


FILTERS = {"bilinear": (_triangle, 1.0), "bicubic": (_cubic, 2.0), "nearest": (None, 0.0)}


@dataclass(frozen=True)
class Axis:
    """The weights of one axis: output i is `weights[i] @ source[start : start + weights.shape[1]]`."""

    start: int
    weights: np.ndarray  # outputs × span, float64, each row summing to 1

    @property
    def stop(self) -> int:
        return self.start + self.weights.shape[1]


@dataclass(frozen=True)
class CropPlan:
    """Where a frame of one size is read (`rows`, `cols` of the source) and how it is weighted."""

    rows: Axis  # vertical: crop × source rows
    cols: Axis  # horizontal: crop × source columns


def resized_size(height: int, width: int, resize: int) -> tuple[int, int]:
    """torchvision's `Resize(int)`: the shorter side becomes `resize`, the longer keeps the aspect (floored)."""
    if height <= width:
        return resize, int(resize * width / height)
    return int(resize * height / width), resize


def crop_offsets(new_h: int, new_w: int, crop: int) -> tuple[int, int]:
    """torchvision's `CenterCrop`: (top, left) in the resized image."""
    return int(round((new_h - crop) / 2.0)), int(round((new_w - crop) / 2.0))


def axis_weights(in_size: int, out_size: int, first: int, count: int, interpolation: str) -> Axis:
    """Pillow's weights for outputs `first .. first+count` of resizing `in_size` pixels to `out_size`."""
    try:
        kernel, support = FILTERS[interpolation]
    except KeyError:
        raise UserError(f"the model asks for {interpolation!r} resizing; supported: {', '.join(FILTERS)}") from None
    scale = in_size / out_size
    if kernel is None:  # nearest: Pillow reads the pixel under each output pixel's centre, with no filter
        centres = np.minimum(((np.arange(first, first + count) + 0.5) * scale).astype(np.int64), in_size - 1)
        start = int(centres.min())
        weights = np.zeros((count, int(centres.max()) - start + 1))
        weights[np.arange(count), centres - start] = 1.0
        return Axis(start, weights)
    filter_scale = max(scale, 1.0)  # downscaling widens the filter: that is the antialiasing
    support *= filter_scale
    centres = (np.arange(first, first + count) + 0.5) * scale
    # Pillow truncates `centre ± support + 0.5` toward zero, then clips to the image.
    lo = np.clip((centres - support + 0.5).astype(np.int64), 0, in_size)
    hi = np.clip((centres + support + 0.5).astype(np.int64), 0, in_size)
    start, stop = int(lo.min()), int(hi.max())
    taps = np.arange(start, stop)
    weights = kernel((taps[None, :] - centres[:, None] + 0.5) / filter_scale)
    weights[(taps[None, :] < lo[:, None]) | (taps[None, :] >= hi[:, None])] = 0.0
    sums = weights.sum(axis=1, keepdims=True)
    weights = np.divide(weights, sums, out=weights, where=sums != 0)
    return Axis(start, weights)


def crop_box(height: int, width: int, resize: int, crop: int) -> tuple[float, float, float, float]:
    """Source-pixel (x0, y0, scale_x, scale_y) of torchvision's resize-then-centre-crop."""
    new_h, new_w = resized_size(height, width, resize)
    top, left = crop_offsets(new_h, new_w, crop)
    scale_x, scale_y = width / new_w, height / new_h
    return left * scale_x, top * scale_y, scale_x, scale_y


def normalisation(spec: PreprocessSpec) -> tuple[np.ndarray, np.ndarray]:
    """(scale, shift), each 3×1×1 float32: `pixel * scale + shift` is `(pixel / 255 - mean) / std`."""
    std = np.asarray(spec.std, np.float32).reshape(3, 1, 1)
    mean = np.asarray(spec.mean, np.float32).reshape(3, 1, 1)
    return 1.0 / (255.0 * std), -mean / std


def crop_plan(height: int, width: int, spec: PreprocessSpec) -> CropPlan:
    new_h, new_w = resized_size(height, width, spec.resize)
    top, left = crop_offsets(new_h, new_w, spec.crop)
    if top < 0 or left < 0:
        raise UserError(f"the model's crop {spec.crop} is larger than its resize {spec.resize}: not supported")
    return CropPlan(rows=axis_weights(height, new_h, top, spec.crop, spec.interpolation),
                    cols=axis_weights(width, new_w, left, spec.crop, spec.interpolation))


class SizeCache:
    """What was worked out for a frame size, kept for the last `limit` sizes: a camera has one size, but an
    image folder or an eval set may have thousands, and a GPU plan holds device memory."""

    def __init__(self, limit: int = 16) -> None:
        self.limit = limit
        self._items: OrderedDict = OrderedDict()

    def get(self, key, make: Callable):
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = self._items[key] = make()
        if len(self._items) > self.limit:
            self._items.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._items)
