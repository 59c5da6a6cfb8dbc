"""The sinks annotated frames go to: a video file, a window, a predictions log (stream.outputs.kinds opens them).

Each sink finalises its file in close(), which the engine calls when its stream ends or leaves, and from a
`finally`, so Ctrl-C, SIGTERM or a failing thread still leave a playable video and a flushed log.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from stream.errors import UserError
from stream.frames import Classified
from stream.outputs.staged import Staged
from stream.outputs.video_writer import choose_codec, even_size, open_encoder


class Sink(Protocol):
    def write(self, item: Classified, annotated: np.ndarray) -> bool:
        """False asks the pipeline to stop (a closed window)."""
        ...

    def summary(self) -> object:
        """What the report says of it: a typed record (VideoSummary, LogSummary, ...)."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class FileSummary:
    path: str
    written: int  # frames (a video) or lines (a log) this stream wrote


@dataclass(frozen=True)
class VideoSummary(FileSummary):
    codec: str = "auto"


class LogSummary(FileSummary):
    """A log shared by several streams counts each stream's own lines."""


@dataclass(frozen=True)
class WindowSummary:
    title: str


def check_writable(path: str, flag: str) -> None:
    """Fail before any processing if `path` cannot be written."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{flag} {path}: is a folder; give a file name")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"{flag} {path}: folder {parent} does not exist; create it or choose another path")
    existed = p.exists()
    try:
        with open(p, "ab"):
            pass
    except OSError as exc:
        raise UserError(f"{flag} {path}: cannot be written ({exc.strerror}); choose a writable path") from None
    if not existed:
        os.unlink(p)


ENCODE_QUEUE = 4  # frames handed to a video's encoder thread and not yet encoded; the render loop waits beyond
ENCODER_NICE = 5  # the encoder thread's niceness (Linux threads each have one)


class VideoFileSink:
    """The annotated video. Frames are encoded on a thread of the sink's own (`encode-NAME`), so the render loop
    draws the next frame meanwhile: on two busy cores the render loop was the pipeline's slowest thread with the
    encode on it. The hand-off waits when it is full, so the file keeps every frame; close() encodes what is
    still waiting, then finalises the file."""

    def __init__(self, path: str, fps: float, width: int, height: int, codec: str = "auto") -> None:
        self.path = path
        self.codec = choose_codec(path, codec).codec
        self.size = even_size(width, height, self.codec)
        self.written = 0  # frames handed to the encoder; once closed, frames in the file
        self._staged = Staged(path)
        self._writer = open_encoder(self._staged.write_path, self.codec, fps, *self.size)
        self._pending: queue.Queue = queue.Queue(ENCODE_QUEUE)
        self._thread: threading.Thread | None = None
        self._encoded = 0
        self._error: BaseException | None = None

    def summary(self) -> VideoSummary:
        return VideoSummary(self.path, self.written, self.codec)

    def write(self, item: Classified, annotated: np.ndarray) -> bool:
        if self._error is not None:
            raise self._error
        h, w = annotated.shape[:2]
        if (w, h) != self.size:
            if 0 <= w - self.size[0] <= 1 and 0 <= h - self.size[1] <= 1:  # an odd size cut to even for H.264
                annotated = np.ascontiguousarray(annotated[:self.size[1], :self.size[0]])
            else:  # image folders may mix sizes; a video cannot
                annotated = cv2.resize(annotated, self.size, interpolation=cv2.INTER_AREA)
        if self._thread is None:
            self._thread = threading.Thread(target=self._encode, name=f"encode-{Path(self.path).name}", daemon=True)
            self._thread.start()
        self._pending.put(annotated)  # nothing draws on a frame after the sinks: no copy needed
        self.written += 1
        return True

    def _encode(self) -> None:
        # Behind the frame's own path: on busy cores the model's thread comes first (the hand-off's bound holds the
        # encoder to the frame rate). Measured on 2 cores, AlexNet int8 batch 1, H.264: 97 fps against 91 encoding
        # on the render loop, and 80 at the same priority as the model; at batch 8, 117 against 123 (5 rounds).
        with contextlib.suppress(OSError, AttributeError):  # not on Linux: the default priority
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), ENCODER_NICE)
        while (frame := self._pending.get()) is not None:
            if self._error is not None:
                continue  # keep taking, so the render loop never waits on a dead encoder
            try:
                self._writer.write(frame)
                self._encoded += 1
            except BaseException as exc:  # noqa: BLE001 - raised on the render loop by the next write or close
                self._error = exc

    def close(self) -> None:
        try:
            if self._thread is not None:
                self._pending.put(None)
                self._thread.join()
                self.written = self._encoded
            self._writer.close()
        finally:  # a video that failed to flush its last frames still holds every frame before them
            self._staged.commit()
        if self._error is not None:
            raise self._error


class WindowSink:
    TITLE = "stream classifier (q to quit)"

    def __init__(self, title: str = TITLE) -> None:
        self.check()
        self.title = title
        cv2.namedWindow(title, cv2.WINDOW_NORMAL)

    @staticmethod
    def check() -> None:
        if not display_available():
            raise UserError(f"--display: no usable display (DISPLAY={os.environ.get('DISPLAY', '')!r}); "
                            "run with --no-display, and --output to keep the annotated video")

    def summary(self) -> WindowSummary:
        return WindowSummary(self.title)

    def write(self, item: Classified, annotated: np.ndarray) -> bool:
        cv2.imshow(self.title, annotated)
        key = cv2.waitKey(1) & 0xFF
        closed = cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1
        return key not in (ord("q"), 27) and not closed

    def close(self) -> None:
        cv2.destroyWindow(self.title)
        cv2.waitKey(1)


class PredictionsLog:
    """One JSON line per processed frame, line-buffered so an abrupt stop loses at most one line.

    Several streams may share one log (each line names its stream): each writes through its own handle
    (`for_stream`), and the file is closed when the last handle is, so a stream that leaves a run in progress
    never closes it under the others."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.written = 0
        self._users = 0
        self._lock = threading.Lock()  # one render thread today; handles may be closed from elsewhere
        self._staged = Staged(path)
        self._file = open(self._staged.write_path, "w", buffering=1, encoding="utf-8")

    def for_stream(self, name: str) -> _LogHandle:
        with self._lock:
            self._users += 1
        return _LogHandle(self, name)

    def write_line(self, name: str, item: Classified) -> None:
        record = {
            "stream": name,
            "frame": item.frame.index,
            "time_s": round(item.frame.time_s, 6),
            "top5": [{"index": t.index, "label": t.label, "prob": round(t.prob, 6)} for t in item.prediction.top],
            # Capture to this line: the frame's end-to-end latency as far as the log can see it.
            "latency_ms": round((time.perf_counter() - item.frame.captured_at) * 1000, 3),
        }
        if item.steady is not None:
            record["steady"] = item.steady.record()
        if item.frame.health is not None:  # the labels of a frozen or blank picture are not the scene's
            record["health"] = item.frame.health
        with self._lock:
            self._file.write(json.dumps(record) + "\n")
            self.written += 1

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            last = self._users <= 0
        if last:
            try:
                self._file.close()
            finally:
                self._staged.commit()

    @property
    def closed(self) -> bool:
        return self._file.closed


class _LogHandle:
    def __init__(self, log: PredictionsLog, name: str) -> None:
        self.log, self.name, self.written, self._closed = log, name, 0, False

    def write(self, item: Classified, annotated: np.ndarray) -> bool:
        self.log.write_line(self.name, item)
        self.written += 1
        return True

    def summary(self) -> LogSummary:
        return LogSummary(self.log.path, self.written)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.log.release()


def display_available() -> bool:
    """Whether a window can open. On Linux OpenCV's Qt build talks X11 only and aborts the whole
    process when the X server is unreachable, so the server is asked first, without Qt."""
    if os.name == "nt" or os.uname().sysname == "Darwin":
        return True
    if not os.environ.get("DISPLAY"):
        return False
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("X11")
    if name is None:
        return False
    xlib = ctypes.CDLL(name)
    xlib.XOpenDisplay.restype = ctypes.c_void_p
    xlib.XOpenDisplay.argtypes = [ctypes.c_char_p]
    xlib.XCloseDisplay.argtypes = [ctypes.c_void_p]
    display = xlib.XOpenDisplay(None)
    if not display:
        return False
    xlib.XCloseDisplay(display)
    return True
