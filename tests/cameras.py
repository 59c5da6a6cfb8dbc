"""Loopback MJPEG-over-HTTP cameras for tests and benchmarks: real photographs, 127.0.0.1 only.

Each camera paces its frames at `fps`, stamps its own sequence number into the bottom-right corner
(16 black/white blocks that survive JPEG and mp4v), and can be made to fail as real cameras do:
`outage(i, s)` drops its connections and refuses new ones for `s` seconds; `stall(i, s)` keeps its
open connections open but silent for `s` seconds (a reconnect gets a fresh, working one). Every loop
is bounded by `max_frames` per connection and by the server's shutdown.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np

from stream.media.sample import pan_zoom, photo

BITS, BLOCK = 16, 12  # a 16-bit sequence number in 12-pixel blocks


def stamp(image: np.ndarray, seq: int) -> np.ndarray:
    h, w = image.shape[:2]
    out = image.copy()
    for bit in range(BITS):
        value = 255 if (seq >> bit) & 1 else 0
        x0 = w - (BITS - bit) * BLOCK
        out[h - BLOCK:h, x0:x0 + BLOCK] = value
    return out


def read_stamp(image: np.ndarray) -> int | None:
    """The sequence number stamped into a frame (None if the corner does not hold a clean code)."""
    h, w = image.shape[:2]
    seq = 0
    for bit in range(BITS):
        x0 = w - (BITS - bit) * BLOCK
        level = float(image[h - BLOCK + 3:h - 3, x0 + 3:x0 + BLOCK - 3].mean())
        if 70 < level < 185:
            return None
        seq |= (level >= 128) << bit
    return seq


class LoopbackCameras:
    def __init__(self, count: int, width: int = 320, height: int = 240, fps: float = 30.0,
                 images=("chelsea", "coffee", "rocket", "astronaut"), max_frames: int = 100_000) -> None:
        self.fps, self.max_frames = fps, max_frames
        self.views = [pan_zoom(photo(images[i % len(images)]), width, height, 30) for i in range(count)]
        self.sent = [0] * count
        # seq → time.monotonic() it was written: lets a test find which of a stream's frames fall in a window
        # of its own clock (an outage) while the rate itself is measured on the reader's side.
        self.sent_at: list[dict[int, float]] = [{} for _ in range(count)]
        self._down_until = [0.0] * count
        self._stall = [(0.0, 0.0)] * count  # (since, until): connections opened before `since` go silent
        self._epoch = [0] * count  # bumped by an outage: open connections of an older epoch close
        self._frozen_until = [0.0] * count  # the same JPEG again and again, sequence stamp included
        self._blank_until = [0.0] * count  # black frames, unstamped
        cameras = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                try:
                    i = int(self.path.strip("/").split(".")[0].removeprefix("cam"))
                    views = cameras.views[i]
                except (ValueError, IndexError):
                    self.send_error(404)
                    return
                if time.monotonic() < cameras._down_until[i]:
                    self.send_error(503)
                    return
                epoch, opened = cameras._epoch[i], time.monotonic()
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                next_at = time.monotonic()
                jpeg = None
                for _ in range(cameras.max_frames):
                    if cameras._epoch[i] != epoch or cameras._closing:
                        return
                    since, until = cameras._stall[i]
                    while opened < since and time.monotonic() < until and not cameras._closing:
                        time.sleep(0.02)
                    seq = cameras.sent[i]
                    now = time.monotonic()
                    if now < cameras._blank_until[i]:
                        jpeg = cv2.imencode(".jpg", np.zeros_like(views[0]))[1].tobytes()
                    elif now >= cameras._frozen_until[i] or jpeg is None:
                        jpeg = cv2.imencode(".jpg", stamp(views[seq % len(views)], seq))[1].tobytes()
                    try:
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                         % len(jpeg) + jpeg + b"\r\n")
                    except OSError:
                        return
                    cameras.sent_at[i][seq] = time.monotonic()
                    cameras.sent[i] += 1
                    next_at += 1 / cameras.fps
                    time.sleep(max(next_at - time.monotonic(), 0))

            def log_message(self, *args):
                pass

        self._closing = False
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/cam{i}.mjpg"

    def outage(self, i: int, seconds: float) -> None:
        self._down_until[i] = time.monotonic() + seconds
        self._epoch[i] += 1

    def freeze(self, i: int, seconds: float) -> None:
        """Camera i repeats the frame it sent last, byte for byte, for `seconds` (a frozen encoder)."""
        self._frozen_until[i] = time.monotonic() + seconds

    def blank(self, i: int, seconds: float) -> None:
        """Camera i sends black frames for `seconds` (a covered lens)."""
        self._blank_until[i] = time.monotonic() + seconds

    def stall(self, i: int, seconds: float) -> None:
        """The connections open now send nothing for `seconds`, but stay open; a new connection is served."""
        now = time.monotonic()
        self._stall[i] = (now, now + seconds)

    def __enter__(self) -> LoopbackCameras:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._closing = True
        self.server.shutdown()
        self.server.server_close()


class Gate:
    """A TCP forwarder in front of a camera, on 127.0.0.1: `hang()` makes it a black hole, as a camera whose
    network path dies is: open connections go silent and new ones are accepted but never answered (a reader
    blocks until its own timeout). `hung_connections` counts the connections accepted while hung."""

    def __init__(self, port: int) -> None:
        import socket

        self.target = port
        self.hung = threading.Event()
        self.hung_connections = 0
        self._held: list = []  # the black hole's sockets, kept open until close()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def hang(self) -> None:
        self.hung.set()

    def _accept(self) -> None:
        import socket

        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.hung.is_set():
                self.hung_connections += 1
                self._held.append(client)
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self._held += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src, dst) -> None:
        while not self.hung.is_set():
            try:
                data = src.recv(65536)
                if not data or self.hung.is_set():
                    return
                dst.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        self._listener.close()
        for s in self._held:
            s.close()
