"""Frames (BGR uint8, any size) → a normalised NCHW float32 batch, in OpenCV/numpy.

Same geometry as torchvision's `Resize(resize) + CenterCrop(crop)`: the crop box is mapped back
onto the source frame and sampled once with one affine warp, so only crop×crop pixels are
interpolated (no full-frame resize). Bilinear without antialiasing differs from torchvision's
antialiased resize by interpolation noise only (tested).
"""

from __future__ import annotations

import cv2
import numpy as np

from models.spec import PreprocessSpec


def crop_box(height: int, width: int, resize: int, crop: int) -> tuple[float, float, float, float]:
    """Source-pixel (x0, y0, scale_x, scale_y) of torchvision's resize-then-centre-crop."""
    if height <= width:
        new_h, new_w = resize, int(resize * width / height)
    else:
        new_h, new_w = int(resize * height / width), resize
    top = int(round((new_h - crop) / 2.0))
    left = int(round((new_w - crop) / 2.0))
    scale_x, scale_y = width / new_w, height / new_h
    return left * scale_x, top * scale_y, scale_x, scale_y


def normalisation(spec: PreprocessSpec) -> tuple[np.ndarray, np.ndarray]:
    """(scale, shift), each 3×1×1 float32: `pixel * scale + shift` is `(pixel / 255 - mean) / std`."""
    std = np.asarray(spec.std, np.float32).reshape(3, 1, 1)
    mean = np.asarray(spec.mean, np.float32).reshape(3, 1, 1)
    return 1.0 / (255.0 * std), -mean / std


class Preprocessor:
    def __init__(self, spec: PreprocessSpec) -> None:
        self.spec = spec
        self._scale, self._shift = normalisation(spec)
        self._maps: dict[tuple[int, int], np.ndarray] = {}

    def _affine(self, height: int, width: int) -> np.ndarray:
        key = (height, width)
        if key not in self._maps:
            x0, y0, sx, sy = crop_box(height, width, self.spec.resize, self.spec.crop)
            # Pixel-centre convention of cv2.resize: src = (dst + 0.5) * scale - 0.5, offset by the box.
            self._maps[key] = np.array(
                [[sx, 0.0, 0.5 * sx - 0.5 + x0], [0.0, sy, 0.5 * sy - 0.5 + y0]], np.float32
            )
        return self._maps[key]

    def crop(self, image: np.ndarray) -> np.ndarray:
        """The crop×crop BGR uint8 region the model sees."""
        size = self.spec.crop
        matrix = self._affine(*image.shape[:2])
        return cv2.warpAffine(
            image, matrix, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )

    def __call__(self, images: list[np.ndarray]) -> np.ndarray:
        size = self.spec.crop
        batch = np.empty((len(images), 3, size, size), np.float32)
        for i, image in enumerate(images):
            # HWC BGR → CHW RGB as a view; normalising in CHW keeps the arithmetic contiguous.
            chw = self.crop(image).transpose(2, 0, 1)[::-1]
            np.multiply(chw, self._scale, out=batch[i], casting="unsafe")
            batch[i] += self._shift
        return batch


def make_preprocessor(spec: PreprocessSpec, device: str):
    """OpenCV on the host for host backends; on the GPU for backends that take GPU tensors."""
    if device == "cpu":
        return Preprocessor(spec)
    from stream.preprocess_gpu import TorchPreprocessor

    return TorchPreprocessor(spec, device)
