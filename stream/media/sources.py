"""Frame sources: camera, video file, stream URL, a single image or a folder of images.

A source's `read()` returns the next Frame, None at the end of the input, or raises StreamError
when a live stream is lost. It never invents a frame (no black or repeated frames on failure).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2

from stream.cores import codec_threads
from stream.errors import StreamError, UserError
from stream.frames import Frame
from stream.media.headers import FORMATS, image_size
from stream.media.truncation import DecodeCheck, check_decoded
from stream.redact import mask_uri

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
# --max-image-pixels' default (stream.config): 10000x10000, 300 MB decoded. A 1 MB PNG can declare 20000x20000
# (1.2 GB decoded; 5.4 GB and 22 s seen through OpenCV), so the header is read and checked before any decode.
MAX_IMAGE_PIXELS = 100_000_000
OVER_LIMIT = "over the limit of"  # in a refusal's reason: the one a larger --max-image-pixels fixes


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def is_camera_index(uri: str) -> bool:
    """`0`, `1`, ...: ASCII digits only (str.isdigit() also takes "²", which int() refuses)."""
    return uri.isascii() and uri.isdigit()


def local_path(uri: str) -> Path | None:
    """The file or folder a URI names on this machine; None for a camera index or a stream URL."""
    if is_camera_index(uri) or uri.lower().startswith(URL_SCHEMES):
        return None
    return Path(uri)


def image_files(folder: Path) -> list[Path]:
    """The images directly in `folder`, by name (the order a folder source plays them)."""
    return sorted(p for p in folder.iterdir() if is_image(p))


def image_refusal(path: str | Path, max_pixels: int = MAX_IMAGE_PIXELS) -> str | None:
    """Why the image at `path` must not be decoded, from its header alone; None when it may be."""
    size = image_size(path)
    if size is None:
        return f"not a {FORMATS} image with a readable header"
    width, height = size
    if width * height > max_pixels:
        return f"{width}x{height} = {width * height} pixels, {OVER_LIMIT} {max_pixels}"
    return None


def decode_image(path: str | Path, max_pixels: int = MAX_IMAGE_PIXELS):
    """(the BGR image, None) or (None, why it was not decoded); its size is checked before the decoder runs."""
    why = image_refusal(path, max_pixels)
    if why:
        return None, why
    try:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    except cv2.error as exc:  # OpenCV's own limit (OPENCV_IO_MAX_IMAGE_PIXELS, 2^30) is below --max-image-pixels'
        return None, f"OpenCV refused to decode it ({str(exc).rpartition('error: ')[2].strip()[:120]})"
    return (image, None) if image is not None else (None, "not a readable image")


URL_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "rtmp://", "udp://", "tcp://")
# A URL that never answers must not hang the tool: OpenCV's FFmpeg backend honours these.
URL_TIMEOUT_MS = 10_000
IMAGE_FOLDER_FPS = 1.0

# RTSP's media (RTP) goes over TCP, inside the RTSP connection, or over UDP, chosen per stream with
# `rtsp://cam/s1?transport=udp` (or `transport = "udp"` in a sources file). TCP by default, as most NVRs and
# go2rtc do: a lost UDP packet is a smeared picture until the next keyframe, and UDP needs the camera to reach
# the client's ports (no NAT, no firewall); TCP costs a little latency when packets are lost. FFmpeg's own
# default, UDP first then TCP after a timeout, is what `OPENCV_FFMPEG_CAPTURE_OPTIONS=rtsp_transport;...` used
# to override for the whole process.
RTSP_SCHEMES = ("rtsp://", "rtsps://")
TRANSPORT_KEY = "transport"
TRANSPORTS = ("tcp", "udp")
DEFAULT_TRANSPORT = "tcp"
# OpenCV's FFmpeg backend takes FFmpeg's options from this variable, read by each open and by nothing else (no
# open parameter carries them in OpenCV 4.12, and FFmpeg's legacy `rtsp://...?tcp` suffix is not honoured by the
# FFmpeg OpenCV bundles: tried). Each RTSP open sets it for its own duration, under a lock, and puts it back; the
# lock makes RTSP opens take turns, each at most URL_TIMEOUT_MS, while reading from open streams goes on.
FFMPEG_OPTIONS = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
_options_lock = threading.Lock()


def rtsp_transport(uri: str) -> tuple[str, str | None]:
    """(the URI to hand to FFmpeg, the transport it asks for, None when it asks for none). Only an RTSP
    URI's `transport` query key is the tool's; it is taken out, the rest of the URI is left as written."""
    if not uri.lower().startswith(RTSP_SCHEMES) or "?" not in uri:
        return uri, None
    head, _, rest = uri.partition("?")
    query, hash_, fragment = rest.partition("#")
    kept, asked = [], None
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        if key.lower() == TRANSPORT_KEY:
            asked = value.lower()
        elif pair:
            kept.append(pair)
    if asked is None:
        return uri, None
    if asked not in TRANSPORTS:
        raise UserError(f"{mask_uri(uri)}: transport {asked!r}: use {' or '.join(TRANSPORTS)}")
    return head + ("?" + "&".join(kept) if kept else "") + hash_ + fragment, asked


def uri_with_transport(uri: str, transport: str, where: str) -> str:
    """An RTSP URI with `?transport=` set (a sources file's `transport` key), or a one-line error."""
    if not uri.lower().startswith(RTSP_SCHEMES) or not isinstance(transport, str) or \
            transport.lower() not in TRANSPORTS:
        raise UserError(f"{where}: transport {transport!r}: use {' or '.join(map(repr, TRANSPORTS))}, for an "
                        f"rtsp:// uri")
    target, asked = rtsp_transport(uri)
    if asked not in (None, transport.lower()):
        raise UserError(f"{where}: transport {transport!r}, but its uri asks for {asked!r}; give one")
    return f"{target}{'&' if '?' in target.partition('#')[0] else '?'}{TRANSPORT_KEY}={transport.lower()}"


def with_transport(options: str | None, transport: str | None) -> str:
    """FFmpeg options (`key;value|key;value`) with the RTSP transport set: the one asked for, else the one
    the user's own options name, else the default."""
    pairs = [p for p in (options or "").split("|") if p]
    named = any(p.partition(";")[0] == "rtsp_transport" for p in pairs)
    if transport is None and named:
        return "|".join(pairs)
    pairs = [p for p in pairs if p.partition(";")[0] != "rtsp_transport"]
    return "|".join([*pairs, f"rtsp_transport;{transport or DEFAULT_TRANSPORT}"])


@contextmanager
def ffmpeg_options(transport: str | None) -> Iterator[None]:
    """OpenCV's FFmpeg options set for one open (the RTSP transport), then put back as they were."""
    with _options_lock:
        saved = os.environ.get(FFMPEG_OPTIONS)
        os.environ[FFMPEG_OPTIONS] = with_transport(saved, transport)
        try:
            yield
        finally:
            if saved is None:
                os.environ.pop(FFMPEG_OPTIONS, None)
            else:
                os.environ[FFMPEG_OPTIONS] = saved


def open_url(uri: str, params: list[int]) -> cv2.VideoCapture:
    """A stream URL opened with FFmpeg; an RTSP one with its transport."""
    if not uri.lower().startswith(RTSP_SCHEMES):
        return cv2.VideoCapture(uri, cv2.CAP_FFMPEG, params)
    target, transport = rtsp_transport(uri)
    with ffmpeg_options(transport):
        return cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)


@dataclass(frozen=True)
class SourceInfo:
    uri: str
    kind: str  # camera | url | file | image | images
    live: bool  # live sources drop old frames instead of blocking
    fps: float | None
    frame_count: int | None
    width: int
    height: int
    seekable: bool = False  # can restart from the beginning (--loop): files and image folders
    nominal_fps: bool = False  # `fps` is made up (an image folder's slideshow rate), not the media's


class Source(Protocol):
    info: SourceInfo

    def read(self) -> Frame | None: ...

    def close(self) -> None: ...

    def rewind(self) -> bool: ...

    def discard_backlog(self) -> int: ...

    def decode_check(self, frames_read: int) -> DecodeCheck | None:
        """After the end of input: whether fewer frames decoded than announced is a fault (files only)."""
        ...


class VideoSource:
    """Anything cv2.VideoCapture opens: camera index, URL or video file."""

    def __init__(self, uri: str, kind: str, capture: cv2.VideoCapture, live: bool,
                 read_timeout_s: float | None = None) -> None:
        self._cap = capture
        self._live = live
        # A read that took the whole read timeout was interrupted: OpenCV's FFmpeg backend then flushes the decoder
        # and hands over the frame it held back (an H.264 stream's, received before the silence) as if it were new.
        # Seen on RTSP: a camera silent for 6 s gave a 5 s old frame at the timeout and was never judged stalled.
        self._read_timeout_s = read_timeout_s
        self._next_index = 0
        self._started = time.perf_counter()
        ok, first = capture.read()
        if not ok or first is None:
            capture.release()
            if kind == "file":
                raise UserError(
                    f"{uri}: no video frame could be decoded (not a video, or corrupt); "
                    "pass a video file, an image or a folder of images"
                )
            raise UserError(f"{uri}: opened but delivered no frame; check that the device/stream is live")
        self._pending = first
        self._max_pts_s = 0.0
        self._note_pts()
        fps = capture.get(cv2.CAP_PROP_FPS)
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        h, w = first.shape[:2]
        self.info = SourceInfo(
            uri=uri,
            kind=kind,
            live=live,
            fps=fps if fps and 0 < fps < 1000 else None,
            frame_count=count if count > 0 and not live else None,
            width=w,
            height=h,
            seekable=kind == "file",
        )

    def read(self) -> Frame | None:
        if self._pending is not None:
            image, self._pending = self._pending, None
        else:
            asked = time.perf_counter()
            ok, image = self._cap.read()
            if self._timed_out(asked):
                ok = False  # the decoder's last frame from before the silence, not a live one
            if not ok or image is None:
                if self.info.live:
                    raise StreamError(
                        f"lost {self.info.kind} {self.info.uri} after {self._next_index} frames; "
                        "check the connection (frames so far are kept)"
                    )
                return None
            self._note_pts()
        now = time.perf_counter()
        index = self._next_index
        self._next_index += 1
        fps = self.info.fps
        time_s = index / fps if fps and not self.info.live else now - self._started
        return Frame(index=index, image=image, captured_at=now, time_s=time_s)

    def _timed_out(self, asked: float) -> bool:
        return self._read_timeout_s is not None and time.perf_counter() - asked >= self._read_timeout_s

    def _note_pts(self) -> None:
        # The decoder's own timestamp, kept for judging truncation. The latest is not always the largest
        # (frames flushed from an H.264 AVI report 0), so keep the largest seen.
        if not self._live:
            self._max_pts_s = max(self._max_pts_s, self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0)

    def decode_check(self, frames_read: int) -> DecodeCheck | None:
        if self.info.live or not self.info.seekable:
            return None
        # The furthest decoded timestamp; None where the decoder gives none.
        last_pts = self._max_pts_s if self._max_pts_s > 0 else None
        return check_decoded(self.info.uri, self.info.frame_count, self.info.fps, frames_read, last_pts)

    def discard_backlog(self, max_frames: int = 300) -> int:
        """Drop the frames a live source buffered while the model loaded; returns how many.

        A buffered frame is handed over at once, a fresh one takes about a frame period: the first
        grab that has to wait marks the present, and that frame is kept.
        """
        if not self.info.live:
            return 0
        fresh_after_s = 0.5 / (self.info.fps or 30.0)
        discarded = 1 if self._pending is not None else 0
        self._pending = None
        while discarded < max_frames:
            started = time.perf_counter()
            if not self._cap.grab():
                break  # the next read() reports the lost stream
            if self._timed_out(started):
                break  # a held-back frame from before the silence: the next read() reports the silent stream
            if time.perf_counter() - started >= fresh_after_s:
                ok, image = self._cap.retrieve()
                self._pending = image if ok else None
                break
            discarded += 1
        return discarded

    def rewind(self) -> bool:
        """Start the file again (for --loop); frame indices keep counting up."""
        return self.info.seekable and self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)

    def close(self) -> None:
        self._cap.release()


class ImageSource:
    """A single image or a folder of images, one frame each, in sorted name order."""

    def __init__(self, uri: str, paths: list[Path], max_pixels: int = MAX_IMAGE_PIXELS) -> None:
        self._paths = paths
        self._pos = 0
        self._next_index = 0
        self._max_pixels = max_pixels
        self._refused: dict[Path, str] = {}  # why each image was skipped, once however often --loop replays it
        first = self._load_next()
        if first is None:
            raise UserError(self._nothing_usable(uri))
        self._pending = first
        h, w = first.shape[:2]
        self.info = SourceInfo(
            uri=uri,
            kind="images" if len(paths) > 1 or Path(uri).is_dir() else "image",
            live=False,
            fps=IMAGE_FOLDER_FPS,
            frame_count=len(paths),
            width=w,
            height=h,
            seekable=True,
            nominal_fps=True,
        )

    def _load_next(self):
        while self._pos < len(self._paths):
            path = self._paths[self._pos]
            self._pos += 1
            image, why = decode_image(path, self._max_pixels)
            if image is not None:
                return image
            self._refused[path] = why
        return None

    @property
    def skipped(self) -> list[str]:
        """'path (why)' for every image that was not shown."""
        return [f"{path} ({why})" for path, why in self._refused.items()]

    def _nothing_usable(self, uri: str) -> str:
        reasons = list(self._refused.values())
        fix = ("give a smaller image, or raise --max-image-pixels if this machine has the memory (3 bytes a pixel)"
               if any(OVER_LIMIT in why for why in reasons) else "pass a folder holding .jpg/.png images")
        if len(self._paths) == 1:
            return f"{uri}: {reasons[0]}; {fix}"
        more = f", and {len(reasons) - 1} more" if len(reasons) > 1 else ""
        return f"{uri}: no usable image: {self.skipped[0]}{more}; {fix}"

    def read(self) -> Frame | None:
        image, self._pending = self._pending, None
        if image is None:
            image = self._load_next()
        if image is None:
            return None
        index = self._next_index
        self._next_index += 1
        return Frame(index=index, image=image, captured_at=time.perf_counter(), time_s=index / IMAGE_FOLDER_FPS)

    def rewind(self) -> bool:
        self._pos = 0
        return True

    def discard_backlog(self) -> int:
        return 0

    def decode_check(self, frames_read: int) -> DecodeCheck | None:
        return None  # unreadable images are listed as skipped instead

    def close(self) -> None:
        pass


def open_source(uri: str, read_timeout_ms: int = URL_TIMEOUT_MS, max_image_pixels: int = MAX_IMAGE_PIXELS) -> Source:
    """Open what the user named; every failure is a UserError naming the fix. `read_timeout_ms` bounds
    how long a silent stream URL blocks a read (the stall limit); an image above `max_image_pixels` is refused
    (a folder skips it) from its header, before it is decoded."""
    if is_camera_index(uri):
        cap = cv2.VideoCapture(int(uri))
        if not cap.isOpened():
            raise UserError(
                f"camera {uri} is not available; check that it is connected and free, "
                "or pass a video file or URL with --source"
            )
        return VideoSource(f"camera:{uri}", "camera", cap, live=True)
    if uri.lower().startswith(URL_SCHEMES):
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, URL_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, read_timeout_ms,
                  cv2.CAP_PROP_N_THREADS, codec_threads()]
        shown = mask_uri(uri)  # the source's name everywhere it is shown or stored: no credentials
        cap = open_url(uri, params)
        if not cap.isOpened():
            raise UserError(f"cannot open stream {shown}; check the address, credentials and network")
        # A URL with a known frame count is a remote file: read it losslessly like a local one.
        live = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) <= 0
        return VideoSource(shown, "url", cap, live=live, read_timeout_s=read_timeout_ms / 1000 if live else None)
    path = Path(uri)
    if not path.exists():
        raise UserError(f"{uri}: no such file or folder; check the path given to --source")
    if path.is_dir():
        images = image_files(path)
        if not images:
            raise UserError(f"{uri}: folder holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        return ImageSource(uri, images, max_image_pixels)
    if is_image(path):
        return ImageSource(uri, [path], max_image_pixels)
    if not os.access(path, os.R_OK):
        raise UserError(f"{uri}: file is not readable; check its permissions")
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, codec_threads()])
    if not cap.isOpened():
        raise UserError(f"{uri}: not a video or image OpenCV can decode; pass a video file (mp4, avi, mkv...)")
    return VideoSource(uri, "file", cap, live=False)
