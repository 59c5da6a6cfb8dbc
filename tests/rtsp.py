"""A loopback RTSP server for the tests (tests/rtsp_server.py, run by the system Python), started, killed and
restarted on the same port as a camera is; and the photographs it plays."""

from __future__ import annotations

import functools
import socket
import subprocess
import time
from pathlib import Path

import cv2

from stream.media.sample import pan_zoom, photo
from tests.cameras import stamp

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER = Path(__file__).with_name("rtsp_server.py")
ELEMENTS = ("multifilesrc", "filesrc", "jpegdec", "videoconvert", "videoscale", "videorate", "imagefreeze",
            "videotestsrc", "x264enc", "rtph264pay")
LOOP_FRAMES = 150  # 5 s at 30 fps, a keyframe every 30
PACKAGES = ("gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-{base,good,ugly,bad} gstreamer1.0-libav python3-gi "
            "(.ci/run installs them as root)")


@functools.cache
def server_missing() -> str | None:
    """Why the RTSP server cannot run here (None when it can): the system Python, GStreamer's RTSP server
    bindings or an element the mounts use is missing."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"no {SYSTEM_PYTHON} to run GStreamer's RTSP server; install {PACKAGES}"
    probe = ("import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0');"
             "from gi.repository import Gst, GstRtspServer; Gst.init(None);"
             f"print(' '.join(e for e in {ELEMENTS!r} if Gst.ElementFactory.find(e) is None))")
    try:
        done = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{SYSTEM_PYTHON} cannot probe GStreamer ({exc}); install {PACKAGES}"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return f"GStreamer's RTSP server is not importable by {SYSTEM_PYTHON} ({last}); install {PACKAGES}"
    if done.stdout.strip():
        return f"GStreamer elements missing: {done.stdout.strip()}; install {PACKAGES}"
    return None


def write_frames(folder: Path) -> Path:
    """The JPEGs the server loops: a photograph panned and zoomed, 640x480, each stamped with its number."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, view in enumerate(pan_zoom(photo("chelsea"), 640, 480, LOOP_FRAMES)):
        cv2.imwrite(str(folder / f"frame{i:05d}.jpg"), stamp(view, i), [cv2.IMWRITE_JPEG_QUALITY, 90])
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RtspServer:
    """The server on 127.0.0.1:`port`; `kill()` and `start()` again are a camera restarted on its address."""

    def __init__(self, frames: Path, log: Path, credentials: str | None = None) -> None:
        self.frames, self.log, self.credentials = frames, log, credentials
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def url(self, mount: str, transport: str | None = None, user: str | None = None) -> str:
        userinfo = f"{user}@" if user else ""
        query = f"?transport={transport}" if transport else ""
        return f"rtsp://{userinfo}127.0.0.1:{self.port}/{mount}{query}"

    def start(self, timeout: float = 30.0) -> float:
        """Started and listening; returns time.monotonic() when it first accepted a connection."""
        args = [SYSTEM_PYTHON, str(SERVER), str(self.port), str(self.frames)]
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(args + ([self.credentials] if self.credentials else []),
                                         stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the RTSP server ended ({self.proc.returncode}): {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return time.monotonic()
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"the RTSP server did not listen on {self.port} within {timeout} s")

    def kill(self) -> float:
        """Killed outright, as a camera losing power; returns time.monotonic() once it is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        return time.monotonic()

    def __enter__(self) -> RtspServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.kill()
