"""One event clip: an H.264 mp4 with its JSON sidecar, written by the clips worker thread only.

The render thread creates it (its name, its events, until when it runs); the worker writes its frames and
finalises it. The clip runs at one constant rate, the stream's own from its frames' spacing when the clip opens
(the median gap of the pre-roll): a frame dropped on the way shortens the clip by one frame period rather than
leaving a gap in time.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from stream.outputs.clip_files import Names, partial, write_file
from stream.outputs.video_writer import Encoder, even_size, open_encoder


@dataclass
class Clip:
    stream: str
    path: Path  # the final name, as the events carry it
    from_s: float  # pre-roll start, stream time
    events: list[dict] = field(default_factory=list)
    open_rules: set[str] = field(default_factory=set)  # the clip rules whose events have not ended (one each)
    until_s: float = float("-inf")  # the latest end + its post-roll, once every event has ended
    # Written by the worker only:
    encoder: Encoder | None = None
    size: tuple[int, int] = (0, 0)
    fps: float = 30.0
    frames: int = 0
    dropped: int = 0  # handed off but never encoded (the worker fell behind)
    first: tuple[int, float] | None = None  # (frame, time_s)
    last: tuple[int, float] | None = None
    truncated: bool = False  # the run's close deadline came first
    failed: str | None = None

    @property
    def running(self) -> bool:
        return bool(self.open_rules)

    def write(self, image: np.ndarray, index: int, time_s: float, fps: float) -> None:
        if self.failed or self.truncated or (self.last is not None and index <= self.last[0]):
            return
        if self.encoder is None:
            self.fps = fps
            h, w = image.shape[:2]
            self.size = even_size(w, h, "h264")
            self.encoder = open_encoder(str(partial(self.path)), "h264", fps, *self.size)
        if image.shape[1::-1] != self.size:  # an odd size cut to even; an image folder's other sizes scaled
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        self.encoder.write(image)
        self.frames += 1
        self.first = self.first or (index, time_s)
        self.last = (index, time_s)

    def finish(self, names: Names) -> Path | None:
        """Sidecar, then the mp4 (an mp4 present always has its sidecar); None for a clip with no frame."""
        written = partial(self.path)
        if self.encoder is None:
            names.release(self.path)
            return None
        try:
            self.encoder.close()
        except BaseException:
            _remove(written)
            names.release(self.path)
            raise
        # The mp4's name was reserved with its .json free (Names.reserve's `beside`).
        write_file(names, self.path.with_suffix(".json"), (json.dumps(self.sidecar(), indent=2) + "\n").encode())
        return names.publish(written, self.path)

    def abandon(self, names: Names) -> None:
        """A clip whose encoder failed: its partial file is removed, its name released."""
        try:
            if self.encoder is not None:
                self.encoder.close()
        except Exception:  # noqa: BLE001, S110 - it already failed once; the file goes either way
            pass
        _remove(partial(self.path))
        names.release(self.path)

    def sidecar(self) -> dict:
        first, last = self.first or (None, None), self.last or (None, None)
        return {"stream": self.stream, "clip": self.path.name, "fps": round(self.fps, 3), "frames": self.frames,
                "first_frame": first[0], "last_frame": last[0], "first_s": first[1], "last_s": last[1],
                "duration_s": round(self.frames / self.fps, 3), "frames_dropped": self.dropped,
                "truncated": self.truncated, "width": self.size[0], "height": self.size[1], "events": self.events}


def _remove(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
