"""One stream's newest annotated frame for browser viewers: a sink the render loop writes into without waiting.

The render thread only swaps a reference under a short lock (and keeps none while nobody watches). JPEG
encoding happens in the server's threads, lazily, for whichever viewer asks first: once per frame and
size, and at most once per MIN_ENCODE_INTERVAL_S, so ten viewers cost what one does. A requested height
snaps down to one of HEIGHTS (one at or above the frame's own is the frame as drawn), and only the
MAX_CACHED sizes used last keep their JPEG: a URL can name any number, the cache holds a handful.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import cv2
import numpy as np

JPEG_QUALITY = 70  # Frigate's choice for its MJPEG preview: about 83 kB per 720p frame
MIN_ENCODE_INTERVAL_S = 1 / 30  # a frame younger than this is reused, however many viewers ask
# The page asks for 540; the rest are the usual video and thumbnail heights.
HEIGHTS = (90, 120, 160, 180, 240, 270, 360, 480, 540, 720, 1080, 1440, 2160, 4320)
MAX_CACHED = 4  # sizes whose newest JPEG is kept, per stream: at 4320 lines about 3 MB each


def snap_height(height: int | None) -> int | None:
    """The HEIGHTS step at or below `height` (the lowest for anything under it); None stays None (as drawn)."""
    if height is None:
        return None
    return HEIGHTS[max(bisect.bisect_right(HEIGHTS, height) - 1, 0)]


@dataclass(frozen=True)
class Encoded:
    seq: int  # which published frame it is
    jpeg: bytes
    at: float  # time.monotonic() when encoded


@dataclass(frozen=True)
class PreviewSummary:
    stream: str
    encodes: int


class LatestFrame:
    def __init__(self, name: str, quality: int = JPEG_QUALITY) -> None:
        self.name = name
        self.quality = quality
        self._lock = threading.Lock()  # the render thread's: held for a swap, never across an encode
        self._encode_lock = threading.Lock()  # the readers': one encode per frame and size
        self._image: np.ndarray | None = None
        self._seq = 0
        self._viewers = 0
        self._cache: OrderedDict[int | None, Encoded] = OrderedDict()  # by output height (None: as drawn), LRU
        self.encodes = 0
        self.retired = False  # its stream left the run: viewers are let go

    # The sink side (stream.outputs.sinks.Sink), called by the render loop. `item` (the frame's Classified
    # record) is typed `object`: only the annotated image is kept, and web reads no pipeline type.
    def write(self, item: object, annotated: np.ndarray) -> bool:
        with self._lock:
            self._seq += 1
            # The frame is not drawn on after the render stage, so a reference is enough; none is kept unwatched.
            self._image = annotated if self._viewers else None
        return True

    def summary(self) -> PreviewSummary:
        return PreviewSummary(self.name, self.encodes)

    def close(self) -> None:
        pass  # the last frame stays on show until the server stops, or the stream is removed

    def retire(self) -> None:
        """Its stream was removed from the run: feeds end their viewers' responses at their next tick."""
        self.retired = True

    # The viewer side, called from the server's threads.
    @property
    def seq(self) -> int:
        return self._seq

    @property
    def viewers(self) -> int:
        return self._viewers

    def watch(self) -> None:
        with self._lock:
            self._viewers += 1

    def unwatch(self) -> None:
        with self._lock:
            self._viewers -= 1
            if not self._viewers:
                self._image = None
                # A new mapping, not clear(): an encode in progress keeps working on the one it took.
                self._cache = OrderedDict()

    @property
    def cached_bytes(self) -> int:
        with self._encode_lock:
            return sum(len(e.jpeg) for e in self._cache.values())

    def jpeg(self, height: int | None = None) -> Encoded | None:
        """The newest frame as JPEG, about `height` pixels high (snap_height; None: as drawn; never enlarged);
        None before any."""
        height = snap_height(height)
        with self._encode_lock:
            with self._lock:
                image, seq, cache = self._image, self._seq, self._cache
            if image is None:
                return cache.get(height)
            h, w = image.shape[:2]
            if height is not None and height >= h:
                height = None
            cached = cache.get(height)
            now = time.monotonic()
            if cached is not None and (cached.seq == seq or now - cached.at < MIN_ENCODE_INTERVAL_S):
                cache.move_to_end(height)
                return cached
            if height is not None:
                # Bilinear costs under 1 ms a 720p frame here, INTER_AREA at a fractional scale about 3 ms;
                # bilinear only aliases visibly below half size, where INTER_AREA is worth its cost.
                interpolation = cv2.INTER_LINEAR if 2 * height >= h else cv2.INTER_AREA
                image = cv2.resize(image, (max(round(w * height / h), 1), height), interpolation=interpolation)
            ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
            if not ok:
                return cached
            self.encodes += 1
            encoded = Encoded(seq, buf.tobytes(), now)
            cache[height] = encoded
            cache.move_to_end(height)
            while len(cache) > MAX_CACHED:
                cache.popitem(last=False)
            return encoded
