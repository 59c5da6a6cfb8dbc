"""`--serve` against hostile and broken clients: DNS rebinding, connection floods, parameters that would multiply
encodings, HEAD of a stream, malformed and oversized requests, credentials. 127.0.0.1 only; raw sockets for what
a well-behaved client library will not send."""

from __future__ import annotations

import http.client
import json
import logging
import os
import selectors
import socket
import threading
import time

import numpy as np
import pytest

from stream.config import Config
from stream.media.sample import pan_zoom, photo
from stream.media.streams import name_from_uri
from stream.session.orchestrator import Run
from stream.web import guard, preview
from stream.web.server import PreviewServer
from tests.test_web import get

TOKEN = "s3cret-token-value"


def status_with(srv: PreviewServer, path: str, headers: dict, method: str = "GET") -> tuple[int, bytes]:
    """Status and body of one request with these headers (Host among them); a stream's body is not read."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    try:
        conn.request(method, path, headers=headers)
        response = conn.getresponse()
        body = b"" if response.getheader("Content-Type", "").startswith("multipart/") else response.read()
        return response.status, body
    finally:
        conn.close()


def raw(port: int, data: bytes, timeout: float = 5) -> bytes:
    """What the server answers `data` with, up to its close (or `timeout`)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        try:
            while chunk := s.recv(1 << 16):
                chunks.append(chunk)
        except (ConnectionResetError, TimeoutError):
            pass
    return b"".join(chunks)


def status_line(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def wait_until(predicate, timeout: float = 10, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while not (value := predicate()) and time.monotonic() < deadline:
        time.sleep(step)
    return value


# ---- 1. DNS rebinding

@pytest.mark.parametrize("path", ["/", "/api/status", "/metrics", "/stream/a.mjpg", "/healthz"])
def test_a_request_naming_a_host_not_allowed_is_refused(server, path):
    srv = server(["a"], allow_hosts="Preview.Example, cam-box.lan")
    for host in ("evil.example", f"evil.example:{srv.port}", "127.0.0.1.evil.example", "localhost.evil.example",
                 "192.168.1.20", ""):
        status, body = status_with(srv, path, {"Host": host})
        assert status == 403, (host, status)
        assert body.decode().count("\n") == 1 and "--serve-allow-host" in body.decode()
    for host in (f"127.0.0.1:{srv.port}", "localhost", f"LOCALHOST:{srv.port}", "app.localhost", f"[::1]:{srv.port}",
                 "127.0.0.2", f"preview.example:{srv.port}", "cam-box.lan."):
        assert status_with(srv, path, {"Host": host})[0] == 200, host
    local = {"Host": f"127.0.0.1:{srv.port}"}
    for origin in ("http://evil.example", f"http://evil.example:{srv.port}", "null", "http://[bad"):
        assert status_with(srv, path, {**local, "Origin": origin})[0] == 403, origin
    for origin in (f"http://127.0.0.1:{srv.port}", f"http://localhost:{srv.port}", "https://preview.example"):
        assert status_with(srv, path, {**local, "Origin": origin})[0] == 200, origin


def test_the_host_policy_of_a_wildcard_or_named_bind():
    assert guard.host_name("Cam.Example.:8080") == "cam.example"
    assert guard.host_name("[::1]:80") == "::1" and guard.host_name("::1") == "::1"
    wide = guard.HostPolicy("0.0.0.0")
    assert wide.allows("192.168.1.20") and wide.allows("fe80::1") and wide.allows("localhost")
    assert not wide.allows("evil.example") and not wide.allows("cam.local")
    assert guard.HostPolicy("::").allows("10.0.0.7")
    named = guard.HostPolicy("camera-box.local", "grafana.lan")
    assert named.allows("camera-box.local") and named.allows("grafana.lan") and named.allows("127.0.0.1")
    assert not named.allows("192.168.1.20")  # a specific bind: only its own address, unless allowed by name
    assert guard.HostPolicy("192.168.1.5").allows("192.168.1.5")


def test_the_run_hands_serve_allow_host_to_the_server():
    run = Run(Config(serve="127.0.0.1:0", serve_allow_host="cam-box.lan"), time.perf_counter())
    run._serve()
    try:
        assert status_with(run.server, "/healthz", {"Host": "cam-box.lan"})[0] == 200
        assert status_with(run.server, "/healthz", {"Host": "evil.example"})[0] == 403
    finally:
        run.server.stop()


# ---- 2. Floods

def count_parts(response: http.client.HTTPResponse, times: list[float]) -> None:
    """Reads an MJPEG response until it ends, noting when each part arrived."""
    try:
        while True:
            header = b""
            while not header.endswith(b"\r\n\r\n"):
                byte = response.read(1)
                if not byte:
                    return
                header += byte
            response.read(int(header.split(b"Content-Length: ")[1].split(b"\r\n")[0]) + 2)
            times.append(time.monotonic())
    except (OSError, ValueError, AttributeError, http.client.HTTPException):  # closed under it
        return


def closed_by_server(socks: list[socket.socket], timeout: float) -> list[float]:
    """When the server closed each socket (EOF or reset), as long as it does so within `timeout`."""
    closed = []
    with selectors.DefaultSelector() as sel:
        for s in socks:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while len(closed) < len(socks) and time.monotonic() < deadline:
            for key, _ in sel.select(0.1):
                try:
                    data = key.fileobj.recv(4096)
                except (ConnectionResetError, BlockingIOError):
                    data = b""
                if not data:
                    sel.unregister(key.fileobj)
                    closed.append(time.monotonic())
    return closed


def test_a_flood_of_idle_and_half_sent_connections_is_closed_while_viewers_and_probes_are_served(server, monkeypatch):
    monkeypatch.setattr(guard, "IDLE_TIMEOUT_S", 4.0)
    srv = server(["a"])
    frame = srv.frames["a"]
    image = pan_zoom(photo("chelsea"), 640, 360, 1)[0]
    stop = threading.Event()

    def publish():
        while not stop.is_set():
            frame.write(None, image)
            time.sleep(1 / 30)

    publisher = threading.Thread(target=publish)
    publisher.start()
    baseline = open_fds()
    viewer = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    viewer.request("GET", "/stream/a.mjpg?fps=20&height=180")
    parts: list[float] = []
    reader = threading.Thread(target=count_parts, args=(viewer.getresponse(), parts))
    reader.start()
    socks = []
    try:
        assert wait_until(lambda: len(parts) >= 2)
        opened = time.monotonic()
        for i in range(300):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            if i % 2:  # headers begun, never finished
                s.sendall(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            socks.append(s)
        started = time.monotonic()
        assert get(srv.url + "healthz")[0] == 200
        assert time.monotonic() - started < 2.0
        assert srv.connections.count <= guard.MAX_CONNECTIONS
        closed = closed_by_server(socks, guard.IDLE_TIMEOUT_S + 8)
        assert len(closed) == 300
        # Those beyond the cap made room for newer ones at once; the rest waited out the idle timeout, which no
        # socket opened after `opened` can reach before opened + IDLE_TIMEOUT_S. (Half of it was the line before:
        # on a loaded CI machine opening the 300 sockets took longer than that, and none was seen closed in time.)
        assert sum(t - opened < guard.IDLE_TIMEOUT_S for t in closed) >= 300 - guard.MAX_CONNECTIONS
        assert sum(opened < t < opened + guard.IDLE_TIMEOUT_S for t in parts) >= 5  # the viewer kept its frames
        assert reader.is_alive()
    finally:
        for s in socks:
            s.close()
        viewer.close()
        reader.join(5)
        stop.set()
        publisher.join(5)
    assert wait_until(lambda: open_fds() <= baseline, timeout=5), (open_fds(), baseline)


def test_when_every_connection_is_in_use_a_new_one_is_refused_at_once(server, monkeypatch):
    monkeypatch.setattr(guard, "MAX_CONNECTIONS", 4)
    srv = server(["a"])
    viewers = [socket.create_connection(("127.0.0.1", srv.port), timeout=5) for _ in range(4)]
    try:
        for v in viewers:
            v.sendall(b"GET /stream/a.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert wait_until(lambda: srv.frames["a"].viewers == 4)
        started = time.monotonic()
        reply = raw(srv.port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert status_line(reply) == 503 and time.monotonic() - started < 2.0
        viewers.pop().close()
        assert wait_until(lambda: srv.connections.count < 4)
        assert get(srv.url + "healthz")[0] == 200
    finally:
        for v in viewers:
            v.close()


def test_a_viewer_that_hangs_up_before_any_frame_is_let_go_at_once(server):
    srv = server(["a"])
    viewer = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    viewer.sendall(b"GET /stream/a.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert wait_until(lambda: srv.frames["a"].viewers == 1)
    viewer.close()
    assert wait_until(lambda: srv.frames["a"].viewers == 0 and not srv._feeds, timeout=3)


# ---- 3. Sizes and rates

def test_600_heights_keep_a_handful_of_encodings():
    frame = preview.LatestFrame("a")
    frame.watch()
    frame.write(None, pan_zoom(photo("chelsea"), 1280, 720, 1)[0])
    for height in range(16, 616):
        assert frame.jpeg(height) is not None
    cached = list(frame._cache.values())
    assert len(cached) <= preview.MAX_CACHED
    assert sum(len(e.jpeg) for e in cached) < 1 << 20
    assert frame.encodes <= len(preview.HEIGHTS)
    assert frame.jpeg(4000).jpeg == frame.jpeg(None).jpeg  # at or above the frame's height: as drawn
    assert preview.snap_height(400) == 360 and preview.snap_height(16) == 90 and preview.snap_height(540) == 540


def test_viewers_asking_nearly_the_same_share_feeds(server):
    srv = server(["a"])
    frame = srv.frames["a"]
    frame.write(None, pan_zoom(photo("chelsea"), 1280, 720, 1)[0])
    viewers = [socket.create_connection(("127.0.0.1", srv.port), timeout=5) for _ in range(40)]
    try:
        for i, v in enumerate(viewers):  # 40 heights from 100 to 490, rates from 5 to 5.39
            v.sendall(f"GET /stream/a.mjpg?height={100 + 10 * i}&fps={5 + i / 100:g} HTTP/1.1\r\n"
                      "Host: 127.0.0.1\r\n\r\n".encode())
        assert wait_until(lambda: frame.viewers == 40)
        heights = {preview.snap_height(100 + 10 * i) for i in range(40)}
        assert len(srv._feeds) == len(heights) <= 8
        assert {(h, fps) for _, h, fps in srv._feeds} == {(h, 5.0) for h in heights}
    finally:
        for v in viewers:
            v.close()


# ---- 4. HEAD

def test_head_of_a_stream_answers_headers_only_and_encodes_nothing(server):
    srv = server(["a"])
    frame = srv.frames["a"]
    image = pan_zoom(photo("chelsea"), 640, 360, 1)[0]
    frame.write(None, image)
    reply = raw(srv.port, b"HEAD /stream/a.mjpg?fps=30 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                timeout=3)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert status_line(reply) == 200
    assert b"Content-Type: multipart/x-mixed-replace; boundary=frame" in head
    assert body == b""
    for _ in range(10):
        frame.write(None, image)
        time.sleep(1 / 30)
    assert frame.encodes == 0 and frame.viewers == 0 and not srv._feeds
    assert status_with(srv, "/stream/a.mjpg?fps=0", {}, "HEAD")[0] == 400
    assert status_with(srv, "/stream/nobody.mjpg", {}, "HEAD")[0] == 404


# ---- 5. The token and malformed requests

def test_any_bearer_bytes_are_a_401_and_the_scheme_is_any_case(server, caplog, capfd):
    srv = server(["a"], token=TOKEN)
    caplog.set_level(logging.DEBUG)
    for value in (b"Bearer \xff\xfe", "Bearer é".encode(), b"Bearer \xed\xa0\x80", b"Bearer", b"Basic Zm9vOmJhcg=="):
        reply = raw(srv.port, b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                              b"Authorization: " + value + b"\r\n\r\n")
        assert status_line(reply) == 401, value
    for scheme in ("bearer", "BEARER", "Bearer"):
        assert status_with(srv, "/api/status", {"Authorization": f"{scheme} {TOKEN}"})[0] == 200
    assert not [r for r in caplog.records if r.exc_info and r.levelno >= logging.INFO]
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize("request_bytes", [
    b"GET /api/status?token=%s HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(200)),
    b"GET /api/status?token=%s HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 100_000 + b"\r\n",
    b"GET /api/status?token=%s&pad=" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n",
    b"GET /api/status?token=%s&x=\xff HTTP/1.1\r\nHost: 127.0.0.1\r\n",
    b"GET /api/status?token=%s HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\r\n",
], ids=["200 headers", "100 KB header", "20 KB URL", "non-ASCII URL", "garbled header"])
def test_a_malformed_request_is_a_4xx_and_one_log_line_without_traceback_or_token(server, request_bytes, caplog,
                                                                                   capfd):
    srv = server(["a"], token=TOKEN)
    caplog.set_level(logging.DEBUG)
    reply = raw(srv.port, request_bytes.replace(b"%s", TOKEN.encode(), 1) + b"\r\n")
    assert 400 <= status_line(reply) < 500
    time.sleep(0.2)  # the log line follows the answer
    records = [r for r in caplog.records if r.name.startswith(("aiohttp", "stream.web"))]
    assert len(records) <= 1, [r.getMessage() for r in records]
    assert not [r for r in records if r.exc_info]
    assert not [r for r in records if TOKEN in r.getMessage()]
    err = capfd.readouterr().err
    assert "Traceback" not in err and TOKEN not in err


# ---- 7. Credentials

def test_status_metrics_and_page_show_no_credentials(server):
    name = name_from_uri("rtsp://admin:pa55word@cam.example:554/live?token=t0ken-secret")
    srv = server([name, "b"])
    frame = srv.frames[name]
    frame.write(None, np.zeros((90, 160, 3), np.uint8))
    shown = [get(srv.url + path)[1] for path in ("", "api/status", "metrics", "stream/nobody.mjpg")]
    assert json.loads(shown[1])["streams"][0]["name"] == name == "cam.example-554-live"
    for body in shown:
        assert b"pa55word" not in body and b"t0ken-secret" not in body and b"admin" not in body
