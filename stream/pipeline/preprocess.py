"""Frames (BGR uint8, any size) → a normalised NCHW float32 batch, on the host, in the model's channel order
(RGB unless its spec says bgr).

The default is faithful to the weights: torchvision's `Resize(antialias) + CenterCrop + Normalize`
as PIL computes it, for the crop's pixels only (`stream.pipeline.resample`). The two separable passes are
sparse matrix products (scipy): each output pixel reads only its filter's taps, about 0.6 ms per
720p frame here against ~4 ms for PIL on the same region. Results are rounded to whole pixel values
as PIL's 8-bit output is, so the model sees PIL's input within a rare ±1 step.

`--resize fast` keeps the old single bilinear warp of the crop (no antialiasing). It is cheaper, but
on real photographs it changes the model's top-1 on about a third of frames: opt-in only.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np
import scipy.sparse as sparse

from models.spec import PreprocessSpec
from stream.pipeline.resample import SizeCache, crop_box, crop_plan, normalisation

try:  # scipy's own CSR × dense kernel, which writes into a given array; public scipy allocates the result
    from scipy.sparse._sparsetools import csr_matvecs as _matvecs
except ImportError:  # pragma: no cover - a scipy that moved it: the allocating products, same numbers
    _matvecs = None


class _Buffers(threading.local):
    """One frame size's scratch arrays, per thread: a plan may be shared (the Ray replica's pool)."""

    arrays: tuple[np.ndarray, ...] | None = None


class _SparseResize:
    """One frame size's crop, as two sparse products straight from interleaved BGR to planar RGB."""

    def __init__(self, height: int, width: int, spec: PreprocessSpec) -> None:
        plan = crop_plan(height, width, spec)
        self.rows, self.cols, self.crop = slice(plan.rows.start, plan.rows.stop), slice(plan.cols.start,
                                                                                        plan.cols.stop), spec.crop
        self.vertical = sparse.csr_array(plan.rows.weights.astype(np.float32))  # crop × source rows
        # Horizontal weights for every channel at once: source column j, channel c (interleaved BGR) →
        # output column x of plane 2 - c (RGB; plane c for a model that takes BGR). Folding the channel
        # swap and the HWC → CHW reorder into the matrix costs nothing per frame.
        w = plan.cols.weights.T.astype(np.float32)  # source columns × crop
        span, crop = w.shape
        blocks = [[None] * 3 for _ in range(3)]
        for c in range(3):
            blocks[c][c if spec.channels == "bgr" else 2 - c] = sparse.csr_array(w)
        interleaved = sparse.block_array(blocks, format="csr")  # rows c*span + j, cols plane*crop + x
        order = np.arange(3 * span).reshape(3, span).T.ravel()  # row j*3 + c of the interleaved frame
        self.horizontal = sparse.csr_array(interleaved[order])  # (span*3) × (3*crop)
        # The second pass as Hᵀ · (first pass)ᵀ, so both are CSR × dense products written into arrays
        # kept between frames: fresh ones per frame cost ~0.3 ms a 720p frame in page faults and cache
        # misses once other threads are streaming memory (the encoder, the decoder).
        self._transposed = sparse.csr_array(self.horizontal.T)  # (3*crop) × (span*3)
        self._shape = (plan.rows.weights.shape[1], 3 * span)
        self._scratch = _Buffers()

    def _arrays(self) -> tuple[np.ndarray, ...]:
        if self._scratch.arrays is None:
            rows, width = self._shape
            self._scratch.arrays = (np.empty((rows, width), np.float32),  # the region, as float
                                    np.empty((self.crop, width), np.float32),  # after the vertical pass
                                    np.empty((width, self.crop), np.float32),  # its transpose
                                    np.empty((3 * self.crop, self.crop), np.float32))  # plane·x × y
        return self._scratch.arrays

    def __call__(self, image: np.ndarray, out: np.ndarray, scale: np.ndarray | None = None,
                 shift: np.ndarray | None = None) -> None:
        """`out` (3 × crop × crop) = the crop in the model's channel order, rounded as PIL's 8-bit output
        is, then `* scale + shift` when they are given."""
        region = image[self.rows, self.cols]
        flat = region.reshape(region.shape[0], -1)  # rows × (cols·3), interleaved; a view
        if _matvecs is None:
            planar = (self.vertical @ flat.astype(np.float32)) @ self.horizontal  # crop × (3·crop)
            by_plane = planar.reshape(self.crop, 3, self.crop).transpose(1, 0, 2)
        else:
            source, first, first_t, second = self._arrays()
            np.copyto(source, flat, casting="unsafe")
            first.fill(0.0)  # the kernels add into their output
            v = self.vertical
            _matvecs(v.shape[0], v.shape[1], source.shape[1], v.indptr, v.indices, v.data, source.ravel(),
                     first.ravel())
            cv2.transpose(first, dst=first_t)  # cache-blocked: a third of numpy's strided copy
            second.fill(0.0)
            h = self._transposed
            _matvecs(h.shape[0], h.shape[1], self.crop, h.indptr, h.indices, h.data, first_t.ravel(),
                     second.ravel())
            for plane in range(3):  # plane·x × y → plane × y × x
                cv2.transpose(second[plane * self.crop:(plane + 1) * self.crop], dst=out[plane])
            planar = by_plane = out
        np.add(planar, 0.5, out=planar)
        np.floor(planar, out=planar)  # PIL rounds to whole 8-bit values (and clips, for bicubic)
        np.clip(planar, 0.0, 255.0, out=planar)
        if by_plane is not out:
            out[...] = by_plane
        if scale is not None:
            out *= scale
            out += shift


class Preprocessor:
    """The weights' own transform, faithfully (default)."""

    def __init__(self, spec: PreprocessSpec) -> None:
        self.spec = spec
        self._scale, self._shift = normalisation(spec)
        self._plans = SizeCache()

    def _plan(self, height: int, width: int) -> _SparseResize:
        return self._plans.get((height, width), lambda: _SparseResize(height, width, self.spec))

    def __call__(self, images: list[np.ndarray]) -> np.ndarray:
        size = self.spec.crop
        batch = np.empty((len(images), 3, size, size), np.float32)
        for i, image in enumerate(images):
            self._plan(*image.shape[:2])(image, batch[i], self._scale, self._shift)
        return batch

    def whole_values(self, image: np.ndarray, out: np.ndarray) -> None:
        """The crop as whole 8-bit values (float32, 3 × crop × crop), before the normalisation."""
        self._plan(*image.shape[:2])(image, out)


class FastPreprocessor:
    """`--resize fast`: the crop box sampled once with a bilinear warp, without antialiasing."""

    def __init__(self, spec: PreprocessSpec) -> None:
        self.spec = spec
        self._scale, self._shift = normalisation(spec)
        self._maps = SizeCache()

    def _affine(self, height: int, width: int) -> np.ndarray:
        def make() -> np.ndarray:
            x0, y0, sx, sy = crop_box(height, width, self.spec.resize, self.spec.crop)
            # Pixel-centre convention of cv2.resize: src = (dst + 0.5) * scale - 0.5, offset by the box.
            return np.array([[sx, 0.0, 0.5 * sx - 0.5 + x0], [0.0, sy, 0.5 * sy - 0.5 + y0]], np.float32)

        return self._maps.get((height, width), make)

    def crop(self, image: np.ndarray) -> np.ndarray:
        size = self.spec.crop
        return cv2.warpAffine(image, self._affine(*image.shape[:2]), (size, size),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)

    def planar(self, crop: np.ndarray) -> np.ndarray:
        """An HWC BGR crop as CHW planes in the model's channel order (a view)."""
        chw = crop.transpose(2, 0, 1)
        return chw if self.spec.channels == "bgr" else chw[::-1]

    def __call__(self, images: list[np.ndarray]) -> np.ndarray:
        size = self.spec.crop
        batch = np.empty((len(images), 3, size, size), np.float32)
        for i, image in enumerate(images):
            # HWC BGR → CHW RGB (or BGR, as the model takes it) as a view; normalising in CHW keeps the
            # arithmetic contiguous.
            chw = self.planar(self.crop(image))
            np.multiply(chw, self._scale, out=batch[i], casting="unsafe")
            batch[i] += self._shift
        return batch


def make_preprocessor(spec: PreprocessSpec, device: str, resize: str = "faithful"):
    """On the host for host backends; on the GPU for backends that take GPU tensors."""
    if device == "cpu":
        return Preprocessor(spec) if resize == "faithful" else FastPreprocessor(spec)
    from stream.pipeline.preprocess_gpu import TorchPreprocessor

    return TorchPreprocessor(spec, device, resize)
