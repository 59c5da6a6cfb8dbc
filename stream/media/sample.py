"""The sample clip: real photographs (scikit-image) panned and zoomed into a short video.

Made on first use and cached, so a new user sees the tool work without finding a video first;
the tests build their clips with the same function.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import cv2
import numpy as np

SAMPLE_IMAGES = ("chelsea", "coffee", "rocket")  # a cat, an espresso, a rocket on its pad
SAMPLE_VERSION = 1


def photo(name: str) -> np.ndarray:
    """A scikit-image sample photograph as BGR uint8."""
    import skimage.data

    image = getattr(skimage.data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[:, :, 2::-1])


def pan_zoom(image: np.ndarray, width: int, height: int, frames: int, zoom: float = 1.25) -> list[np.ndarray]:
    """`frames` views of `image` at width×height, zooming in and drifting across it."""
    h, w = image.shape[:2]
    aspect = width / height
    base_w, base_h = (w, w / aspect) if w / h < aspect else (h * aspect, h)
    out = []
    for i in range(frames):
        t = i / max(frames - 1, 1)
        z = 1.0 + (zoom - 1.0) * t
        cw, ch = base_w / z, base_h / z
        cx = w / 2 + (w - cw) / 2 * 0.5 * np.sin(2 * np.pi * t)
        cy = h / 2 + (h - ch) / 2 * 0.5 * np.cos(2 * np.pi * t)
        x0, y0 = np.clip(cx - cw / 2, 0, w - cw), np.clip(cy - ch / 2, 0, h - ch)
        matrix = np.array([[cw / width, 0, x0], [0, ch / height, y0]], np.float32)
        out.append(cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                  borderMode=cv2.BORDER_REFLECT))
    return out


def make_clip(path: str | Path, images=SAMPLE_IMAGES, width: int = 1280, height: int = 720,
              fps: float = 30.0, frames_per_image: int = 60) -> Path:
    path = Path(path)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise OSError(f"cannot write video {path}")
    try:
        for name in images:
            for frame in pan_zoom(photo(name), width, height, frames_per_image):
                writer.write(frame)
    finally:
        writer.release()
    return path


def sample_clip(cache_dir: str | Path | None = None) -> Path:
    """The cached sample clip, made on first use (about a second)."""
    base = _cache_base(cache_dir)
    path = base / f"sample-v{SAMPLE_VERSION}-720p.mp4"
    if not path.is_file():
        base.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.mp4")
        make_clip(tmp)
        os.replace(tmp, path)
    return path


# A labelled image set for `eval` when no --data is given, labelled by hand with the closest ImageNet
# class (ImageNet has no "rocket": its launch photo is labelled "missile").
SAMPLE_SET = {"tabby": "chelsea", "espresso": "coffee", "missile": "rocket", "tripod": "camera"}
SAMPLE_SET_VERSION = 1


def make_labelled_set(root: str | Path, classes: dict[str, str] = SAMPLE_SET, per_class: int = 13,
                      width: int = 400, height: int = 300) -> Path:
    """One folder per label holding `per_class` views (zoomed, shifted, every other one mirrored)."""
    root = Path(root)
    for label, name in classes.items():
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for i, view in enumerate(pan_zoom(photo(name), width, height, per_class, zoom=1.5)):
            if i % 2:
                view = np.ascontiguousarray(view[:, ::-1])
            if not cv2.imwrite(str(folder / f"{name}-{i:02d}.jpg"), view):
                raise OSError(f"cannot write {folder}")
    return root


def sample_set(cache_dir: str | Path | None = None) -> Path:
    """The cached sample labelled set (52 images of 4 classes), made on first use."""
    base = _cache_base(cache_dir)
    path = base / f"sample-set-v{SAMPLE_SET_VERSION}"
    if not path.is_dir():
        tmp = base / f".sample-set-{os.getpid()}.tmp"
        tmp.mkdir(mode=0o700)  # a folder of the cache: the user's own (trusted_root checks it)
        make_labelled_set(tmp)
        try:
            os.replace(tmp, path)
        except OSError:  # another process published it first
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def _cache_base(cache_dir: str | Path | None) -> Path:
    """The one cache root (--cache-dir, else $STREAM_CLASSIFIER_CACHE, else the user cache), as exports use: a
    private temporary one when other users could write there (stream.backends.cache.trusted_root)."""
    from stream.backends.cache import default_root, trusted_root

    return trusted_root(Path(cache_dir) if cache_dir else default_root())
