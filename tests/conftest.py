"""Shared fixtures: test videos made from real photographs (scikit-image), never committed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from stream.media.sample import make_clip, pan_zoom, photo

ROOT = Path(__file__).resolve().parents[1]
CAT_LABELS = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def cat_clip(media) -> Path:
    """24 frames of the chelsea photograph, panned and zoomed, 640×360 at 30 fps."""
    return make_clip(media / "cat.mp4", images=("chelsea",), width=640, height=360, frames_per_image=24)


@pytest.fixture(scope="session")
def alternating_clip(media) -> Path:
    """Frame i shows photo i % 3 (cat, espresso, rocket): any frame/label shift changes the labels."""
    names = ("chelsea", "coffee", "rocket")
    views = {n: pan_zoom(photo(n), 480, 320, 8, zoom=1.1) for n in names}
    path = media / "alternating.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (480, 320))
    for i in range(24):
        writer.write(views[names[i % 3]][i // 3])
    writer.release()
    return path


def fit_views(image: np.ndarray, width: int, height: int, frames: int, zoom: float = 1.08) -> list[np.ndarray]:
    """`frames` views of the whole photo fitted to the frame on grey, zooming ≤ 8 % with a small drift: every
    frame differs and the model's label stays the photo's (cropping to 16:9 or stretching changes it)."""
    h, w = image.shape[:2]
    s = height / h if w / h < width / height else width / w
    views = []
    for i in range(frames):
        t = i / max(frames - 1, 1)
        z = s * (1 + (zoom - 1) * t)
        dx, dy = width / 2 + 0.02 * width * np.sin(2 * np.pi * t), height / 2 + 0.02 * height * np.cos(2 * np.pi * t)
        m = np.array([[z, 0, dx - z * w / 2], [0, z, dy - z * h / 2]], np.float32)
        views.append(cv2.warpAffine(image, m, (width, height), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_CONSTANT,
                                    borderValue=(128, 128, 128)))
    return views


LABELLED = (("coffee", 4.0), ("chelsea", 4.0), ("coffee", 4.0), ("clock", 4.0))  # photo, seconds


@pytest.fixture(scope="session")
def labelled_clip(media) -> Path:
    """16 s at 30 fps, 640×360, of known label intervals (EfficientNet-Lite0: espresso 0–4 s, a cat 4–8 s as
    near-ties of Egyptian cat and tabby, espresso 8–12 s, spotlight 12–16 s)."""
    path = media / "labelled.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (640, 360))
    for name, seconds in LABELLED:
        for view in fit_views(photo(name), 640, 360, int(seconds * 30)):
            writer.write(view)
    writer.release()
    return path


@pytest.fixture(scope="session")
def long_avi(media) -> Path:
    """A 90-frame MJPG clip (frames survive truncation in AVI, unlike mp4's trailing index)."""
    return make_clip(media / "long.avi", images=("coffee",), width=320, height=240, frames_per_image=90)


def write_h264(path: Path, image: str, frames: int, first_pts: int = 0, container_options=None) -> Path:
    """An H.264 video of a real photograph (PyAV's bundled libx264), 640×480 at 30 fps.

    `first_pts=-1` starts the stream one frame early: the mp4 muxer then writes an edit list that hides
    that frame, so the container announces `frames` and a decoder delivers `frames - 1`, as with many
    edited or trimmed recordings.
    """
    from fractions import Fraction

    import av

    views = pan_zoom(photo(image), 640, 480, frames)
    with av.open(str(path), "w", options=container_options or {}) as out:
        stream = out.add_stream("libx264", rate=30, options={"preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = 640, 480, "yuv420p"
        stream.time_base = Fraction(1, 30)
        for i, view in enumerate(views):
            frame = av.VideoFrame.from_ndarray(view, format="bgr24")
            frame.pts, frame.time_base = first_pts + i, Fraction(1, 30)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


@pytest.fixture(scope="session")
def edit_listed_mp4(media) -> Path:
    """456 frames announced, 455 decodable: an ordinary file, not a truncated one."""
    return write_h264(media / "edit-listed.mp4", "coffee", 456, first_pts=-1)


@pytest.fixture(scope="session")
def cut_mp4(media) -> Path:
    """An H.264 mp4 (index first, as streaming muxers write it) cut to its first third."""
    whole = write_h264(media / "whole-faststart.mp4", "chelsea", 240, container_options={"movflags": "faststart"})
    data = whole.read_bytes()
    cut = media / "cut.mp4"
    cut.write_bytes(data[: len(data) // 3])
    return cut


@pytest.fixture(scope="session")
def corrupt_avi(media) -> Path:
    """An H.264 AVI of 444 frames with 64 KB of garbage in place of slices at 15 % of the file."""
    data = bytearray(write_h264(media / "whole.avi", "rocket", 444).read_bytes())
    at = int(len(data) * 0.15)
    data[at:at + 65536] = np.random.default_rng(1).integers(0, 256, 65536, dtype=np.uint8).tobytes()
    path = media / "corrupt.avi"
    path.write_bytes(bytes(data))
    return path


def read_all_frames(path: str | Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def run_cli(*args: str, timeout: float = 180, env_extra: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, str(ROOT / "run_stream.py"), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env, **kwargs)


def start_cli(*args: str) -> subprocess.Popen:
    """A run in the background, to be signalled. A test run started in the background (`pytest &`)
    ignores SIGINT, and so would its children: the child gets the disposition an interactive user's has."""
    return subprocess.Popen([sys.executable, str(ROOT / "run_stream.py"), *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for_lines(proc: subprocess.Popen, path: Path, count: int, timeout: float = 120) -> None:
    """Until `path` holds `count` lines (the run is under way), failing if the run ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (not path.exists() or len(path.read_text().splitlines()) < count):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)


@pytest.fixture
def mjpeg_stream():
    """A live HTTP MJPEG camera on loopback that sends 60 frames at 30 fps and then drops."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    jpegs = [cv2.imencode(".jpg", f)[1].tobytes() for f in pan_zoom(photo("chelsea"), 320, 240, 30)]

    class Camera(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            for i in range(60):
                jpeg = jpegs[i % len(jpegs)]
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg)
                                 + jpeg + b"\r\n")
                time.sleep(1 / 30)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Camera)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/stream.mjpg"
    server.shutdown()
    server.server_close()


@pytest.fixture
def server():
    """A factory of started `--serve` servers on a free loopback port, all stopped after the test."""
    from stream.web.address import parse_serve
    from stream.web.server import PreviewServer

    servers = []

    def make(names, token=None, allow_hosts=None):
        srv = PreviewServer(parse_serve("127.0.0.1:0"), names, token, allow_hosts)
        srv.start()
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        srv.stop()
