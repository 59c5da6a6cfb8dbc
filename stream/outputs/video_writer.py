"""Annotated video encoders: H.264 and mp4v through PyAV (browsers play H.264), Motion-JPEG through OpenCV.

OpenCV's pip wheels carry no H.264 encoder; PyAV's wheels bundle libx264. `.mp4` and its kin default to
H.264 in yuv420p with the index at the front (`+faststart`), so a browser's `<video>` starts playing
before the whole file has arrived; without PyAV or libx264 they fall back to mp4v and say why in one
line. `.avi` stays Motion-JPEG: every complete frame stays playable if the process is killed outright.
mp4v (FFmpeg's mpeg4) is written through PyAV too when it is there, at OpenCV's settings: OpenCV converts BGR to
yuv420p with swscale, which made its writer 3.2 ms a 720p frame here against 2.5 ms for the same encoder fed by
OpenCV's own colour conversion.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from stream.config import CODECS
from stream.cores import codec_threads
from stream.errors import UserError

AUTO = {".mp4": "h264", ".m4v": "h264", ".mov": "h264", ".mkv": "h264", ".avi": "mjpg"}
# Which codec each container can hold, as written here (OpenCV's mp4 muxer refuses Motion-JPEG).
ALLOWED = {".mp4": ("h264", "mp4v"), ".m4v": ("h264", "mp4v"), ".mov": ("h264", "mp4v", "mjpg"),
           ".mkv": ("h264", "mp4v", "mjpg"), ".avi": ("h264", "mp4v", "mjpg")}
FOURCC = {"mp4v": "mp4v", "mjpg": "MJPG"}
# ultrafast costs about what mp4v did on the 2-core machine (README: codec cost table). A constant quantiser, not
# x264's default crf 23: on the sample clip with its overlay, qp 22 gave a higher luma PSNR (43.1 dB mean, 42.0 the
# worst frame, against 42.5 and 39.4) for 13 % less CPU a frame (4.6 against 5.3 ms, one thread) and 12 % more bytes.
X264_OPTIONS = {"preset": "ultrafast", "qp": "22"}
FASTSTART = (".mp4", ".m4v", ".mov")


@dataclass(frozen=True)
class CodecChoice:
    codec: str  # h264 | mp4v | mjpg
    note: str | None = None  # why the codec asked for (auto) was not used


class Encoder(Protocol):
    def write(self, bgr: np.ndarray) -> None: ...

    def close(self) -> None: ...


def pyav_available() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def h264_unavailable() -> str | None:
    """Why H.264 cannot be written here, or None when it can."""
    if not pyav_available():
        return "PyAV is not installed (pip install av)"
    import av

    if "libx264" not in av.codecs_available:
        return "this PyAV build has no libx264 encoder"
    return None


def choose_codec(path: str, codec: str = "auto") -> CodecChoice:
    """The codec `path` will be written with; a one-line error for a combination that cannot work."""
    ext = Path(path).suffix.lower()
    if ext not in AUTO:
        raise UserError(f"--output {path}: unsupported extension; use one of {', '.join(AUTO)}")
    if codec not in CODECS:
        raise UserError(f"bad value for codec: {codec!r}; choose one of {', '.join(CODECS)}")
    wanted = AUTO[ext] if codec == "auto" else codec
    if wanted not in ALLOWED[ext]:
        raise UserError(f"--codec {codec}: cannot be written into {ext}; use one of {', '.join(ALLOWED[ext])} "
                        f"or a .avi/.mkv path")
    if wanted == "h264":
        why = h264_unavailable()
        if why and codec == "h264":
            raise UserError(f"--codec h264: {why}; use --codec mp4v")
        if why:
            return CodecChoice("mp4v", f"--output {path}: writing mp4v, not H.264, because {why}; "
                                       "browsers will not play it")
    return CodecChoice(wanted)


def open_encoder(path: str, codec: str, fps: float, width: int, height: int) -> Encoder:
    if codec == "h264" or (codec == "mp4v" and pyav_available()):
        return PyAvEncoder(path, codec, fps, width, height)
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*FOURCC[codec]), fps, (width, height))
    if not writer.isOpened():
        raise UserError(f"--output {path}: OpenCV cannot write {codec} here; try a .avi or .mp4 path")
    return OpenCvEncoder(writer)


def even_size(width: int, height: int, codec: str) -> tuple[int, int]:
    """yuv420p halves the chroma planes, so H.264 needs even dimensions: odd ones lose their last pixel."""
    if codec != "h264":
        return width, height
    return max(width - width % 2, 2), max(height - height % 2, 2)


class OpenCvEncoder:
    def __init__(self, writer: cv2.VideoWriter) -> None:
        self._writer = writer

    def write(self, bgr: np.ndarray) -> None:
        self._writer.write(bgr)

    def close(self) -> None:
        self._writer.release()


class PyAvEncoder:
    """libx264 or mpeg4 through PyAV; close() flushes the encoder's delayed frames and writes the index."""

    def __init__(self, path: str, codec: str, fps: float, width: int, height: int) -> None:
        import av

        rate = Fraction(fps).limit_denominator(1001)
        options = {"movflags": "+faststart"} if Path(path).suffix.lower() in FASTSTART else {}
        try:
            self._container = av.open(path, "w", options=options)
        except (OSError, av.FFmpegError) as exc:
            raise UserError(f"--output {path}: cannot be written ({exc})") from None
        if codec == "h264":
            self._stream = self._container.add_stream("libx264", rate=rate, options=dict(X264_OPTIONS))
        else:
            self._stream = self._container.add_stream("mpeg4", rate=rate)
            # OpenCV's writer's settings (cap_ffmpeg_impl.hpp): 1.5 bits per pixel per second of frames, a keyframe
            # every 12, quantiser 3 at best. The sample clip's files come out the same size (1.42 MB for 120 frames)
            # and closer to their frames (44.6 dB PSNR against 40.7: OpenCV's swscale rounds the colours coarsely).
            rate_bits = int(min(1.5 * fps * width * height, 2**31 - 1))
            context = self._stream.codec_context
            context.bit_rate, context.bit_rate_tolerance, context.gop_size, context.qmin = rate_bits, rate_bits, 12, 3
        self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, "yuv420p"
        self._stream.codec_context.thread_count = codec_threads()
        self._stream.codec_context.time_base = 1 / rate
        self._time_base = 1 / rate
        self._next_pts = 0
        self._closed = False

    def write(self, bgr: np.ndarray) -> None:
        import av

        # OpenCV's BGR to I420 costs about 0.2 ms a 720p frame here, PyAV's swscale path about 1.3 ms: on the
        # render thread that difference is pipeline fps. Both are BT.601, as decoders assume for untagged video.
        # The frame wraps the fresh I420 array (it holds a reference until the encoder lets go of it) instead
        # of copying it into buffers of its own: 0.4-1.4 ms less CPU a 720p frame here, the same file.
        frame = av.VideoFrame.from_numpy_buffer(cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420), format="yuv420p")
        frame.pts, frame.time_base = self._next_pts, self._time_base
        self._next_pts += 1
        self._container.mux(self._stream.encode(frame))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._container.mux(self._stream.encode())
        finally:
            self._container.close()
