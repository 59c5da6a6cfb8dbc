"""A few real frames taken at once: evenly spaced frames of a video, an image, or a folder's images.

What int8 calibrates on and what the lab measures with; not a stream (no pacing, no reconnects).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from stream.errors import UserError
from stream.media.sources import decode_image, image_files, is_image


def spaced(total: int, count: int) -> list[int]:
    """`count` indices spread evenly over 0..total-1 (all of them when there are fewer)."""
    if total <= count:
        return list(range(total))
    return sorted({int(i) for i in np.linspace(0, total - 1, count).round()})


def read_images(paths: list[str]) -> tuple[list[np.ndarray], list[str], list[str]]:
    """(frames, paths read, 'path (why)' for those that could not be decoded); an image above the default
    --max-image-pixels is skipped from its header, never decoded."""
    frames, read, skipped = [], [], []
    for path in paths:
        image, why = decode_image(path)
        if image is None:
            skipped.append(f"{path} ({why})")
        else:
            frames.append(image)
            read.append(path)
    return frames, read, skipped


def load_frames(inputs: str, count: int, flag: str = "--inputs") -> list[np.ndarray]:
    """Up to `count` real frames from a video file, an image, or a folder of images; `flag` names the
    option that gave them in errors."""
    path = Path(inputs)
    skipped: list[str] = []
    if path.is_dir():
        files = [str(p) for p in image_files(path)]
        frames, _, skipped = read_images([files[i] for i in spaced(len(files), count)])
    elif is_image(path):
        frames, _, skipped = read_images([str(path)])
    elif path.is_file():
        frames = _video_frames(path, count, flag)
    else:
        raise UserError(f"{flag} {inputs}: no such file or folder")
    if not frames:
        raise UserError(f"{flag} {inputs}: no decodable frames" + (f": {skipped[0]}" if skipped else ""))
    return frames


def _video_frames(path: Path, count: int, flag: str) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise UserError(f"{flag} {path}: not a readable video")
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        wanted = set(spaced(total, count)) if total > 0 else set(range(count))
        frames, index = [], 0
        # Sequential reads: seeking is inexact in many containers, and these clips are short.
        while len(frames) < len(wanted):
            ok, frame = cap.read()
            if not ok:
                break
            if index in wanted:
                frames.append(frame)
            index += 1
        return frames
    finally:
        cap.release()
