"""`--serve` at the library level: routes, status and metrics against the run report, bad requests, tokens,
viewers that read slowly or never. A real pipeline (stand-in backend) on real photographs; 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stream.backends import LoadRecord
from stream.errors import UserError
from stream.frames import Frame
from stream.media.sample import pan_zoom, photo
from stream.media.sources import SourceInfo
from stream.observe.runinfo import RunInfo
from stream.pipeline.inference import Batching
from stream.pipeline.preprocess import Preprocessor
from stream.session.plan import StreamPlan
from stream.session.report import LoadTimes, build_report
from stream.session.session import Session
from stream.web import server as web_server
from stream.web.address import exposure_warning, parse_serve
from stream.web.server import PreviewServer
from tests.sessions import add, local_session
from tests.test_pipeline import CATEGORIES, SPEC, GrayBackend


class PhotoSource:
    """A photograph panned across `count` frames, `fps` of them a second (0: as fast as asked)."""

    def __init__(self, name: str, count: int, fps: float = 0.0, size=(640, 360)):
        self.views = pan_zoom(photo(name), *size, 30)
        self.count, self.period = count, 1 / fps if fps else 0.0
        self.info = SourceInfo(name, "file", False, fps or 30.0, count, *size)
        self._next, self._due = 0, None

    def read(self):
        if self._next >= self.count:
            return None
        if self.period:
            now = time.perf_counter()
            self._due = now if self._due is None else self._due + self.period
            time.sleep(max(self._due - now, 0))
        i = self._next
        self._next += 1
        return Frame(i, self.views[i % len(self.views)].copy(), time.perf_counter(), i / 30)

    def rewind(self):
        return False

    def discard_backlog(self):
        return 0

    def decode_check(self, frames_read):
        return None

    def close(self):
        pass


class Publisher:
    """The dashboard's seat: hands each snapshot to the server and leaves it running after the run."""

    def __init__(self, server: PreviewServer):
        self.server = server

    def update(self, snap):
        self.server.update(snap)

    def close(self):
        pass


def pipeline_for(server: PreviewServer, sources: list[PhotoSource]) -> Session:
    session = local_session(GrayBackend(), Preprocessor(SPEC), CATEGORIES, Batching(2, 0.02, None), Publisher(server))
    for s in sources:
        add(session, StreamPlan(s.info.uri, False, 4, 30.0, False, s.count), s, [server.add_stream(s.info.uri)])
    return session


def get(url: str, headers=None, method="GET") -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}, method=method),
                                    timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def read_jpegs(url: str, count: int, timeout: float = 20) -> list[np.ndarray]:
    """The first `count` JPEGs of an MJPEG stream, decoded."""
    with urllib.request.urlopen(url, timeout=timeout) as r:
        assert r.headers["Content-Type"].startswith("multipart/x-mixed-replace")
        images = []
        while len(images) < count:
            header = b""
            while not header.endswith(b"\r\n\r\n"):
                header += r.read(1)
            length = int(header.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            images.append(cv2.imdecode(np.frombuffer(r.read(length), np.uint8), cv2.IMREAD_COLOR))
            r.read(2)
        return images


def metrics(url: str) -> dict[tuple[str, tuple], float]:
    status, body = get(url + "metrics")
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


def test_status_and_metrics_at_the_end_equal_the_run_report(server):
    srv = server(["chelsea", "coffee"])
    sources = [PhotoSource("chelsea", 40), PhotoSource("coffee", 30)]
    outcome = pipeline_for(srv, sources).run()
    info = RunInfo(sources[0].info, "gray", "none", False, "fake", "cpu", "fp32", 2, "block")
    report = build_report(info, outcome, LoadTimes(LoadRecord(0.0, None, "not used"), 0.0, 0.0), 0.0, None)
    m = metrics(srv.url)
    status, body = get(srv.url + "api/status")
    doc = json.loads(body)
    assert status == 200 and [s["name"] for s in doc["streams"]] == ["chelsea", "coffee"]
    for row, stream in zip(report["streams"], doc["streams"], strict=True):
        name = (("stream", row["name"]),)
        frames = row["frames"]
        assert (frames["read"], frames["processed"], frames["shown"]) == (40, 40, 40) if name[0][1] == "chelsea" \
            else (30, 30, 30)
        assert m[("stream_frames_read_total", name)] == frames["read"]
        assert m[("stream_frames_processed_total", name)] == frames["processed"]
        assert m[("stream_frames_shown_total", name)] == frames["shown"] == stream["frames"]["shown"]
        for cause, count in row["drops"].items():
            assert m[("stream_frames_dropped_total", (("cause", cause), *name))] == count
        e2e = (("stage", "end_to_end"), *name)
        assert m[("stream_latency_seconds_count", e2e)] == frames["shown"]
        assert m[("stream_latency_seconds_bucket", (("le", "+Inf"), *e2e))] == frames["shown"]
        # The run's mean end-to-end latency, from the histogram's sum, is the report's.
        mean_s = m[("stream_latency_seconds_sum", e2e)] / frames["shown"]
        assert mean_s * 1000 == pytest.approx(row["latency_ms"]["end_to_end"]["mean"], rel=1e-6)
        assert m[("stream_state", (("state", "ended"), *name))] == 1.0
        assert stream["top"] and stream["top"][0]["label"].startswith("value")
    assert m[("stream_model_only_fps", ())] == pytest.approx(report["fps"]["model_only"], rel=1e-6)
    assert m[("process_resident_memory_bytes", ())] > 0
    assert get(srv.url + "healthz") == (200, b'{"status": "ok", "running": true}')


def test_before_the_run_every_stream_is_starting(server):
    srv = server(["a", "b"])
    status, body = get(srv.url + "api/status")
    assert json.loads(body) == {"state": "starting", "streams": [{"name": "a", "state": "starting"},
                                                                 {"name": "b", "state": "starting"}], "waiting": []}
    status, page = get(srv.url)
    assert status == 200 and b"api/status" in page


@pytest.mark.parametrize("path,method,code", [
    ("stream/nobody.mjpg", "GET", 404), ("nothing/here", "GET", 404), ("", "POST", 405),
    ("metrics", "DELETE", 405), ("stream/a.mjpg?fps=abc", "GET", 400), ("stream/a.mjpg?fps=0", "GET", 400),
    ("stream/a.mjpg?fps=nan", "GET", 400), ("stream/a.mjpg?height=5", "GET", 400),
    ("stream/a.mjpg?height=1e9", "GET", 400)])
def test_bad_requests_get_a_4xx_and_no_traceback(server, path, method, code, caplog, capfd):
    srv = server(["a"])
    caplog.set_level(logging.DEBUG)
    status, body = get(srv.url + path, method=method)
    assert status == code
    assert not [r for r in caplog.records if r.exc_info and r.levelno >= logging.INFO]
    assert "Traceback" not in capfd.readouterr().err


def test_a_malformed_request_gets_400_and_no_traceback(server, caplog, capfd):
    srv = server(["a"])
    caplog.set_level(logging.DEBUG)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
        reply = s.recv(200)
    assert reply.split(b"\r\n")[0].endswith(b" 400 Bad Request")
    assert not [r for r in caplog.records if r.exc_info and r.levelno >= logging.INFO]
    assert "Traceback" not in capfd.readouterr().err


def test_a_token_is_required_when_set(server):
    srv = server(["a"], token="s3cret")
    for path in ("", "api/status", "metrics", "stream/a.mjpg"):
        assert get(srv.url + path)[0] == 401
        assert get(srv.url + path + "?token=wrong")[0] == 401
        assert get(srv.url + path, {"Authorization": "Bearer wrong"})[0] == 401
    assert get(srv.url + "api/status?token=s3cret")[0] == 200
    assert get(srv.url + "metrics", {"Authorization": "Bearer s3cret"})[0] == 200
    assert get(srv.url + "healthz")[0] == 200  # probes carry no secrets


def test_serve_addresses_and_the_warning_beyond_loopback():
    assert parse_serve("8080") == parse_serve("127.0.0.1:8080")
    assert parse_serve("[::1]:0").host == "::1" and parse_serve("[::1]:0").loopback
    assert parse_serve("localhost:9000").loopback
    for bad in ("http", "70000", ":80", "host:", "1.2.3.4:-1"):
        with pytest.raises(UserError, match="bad value for serve"):
            parse_serve(bad)
    assert exposure_warning(parse_serve("127.0.0.1:8080"), None) is None
    open_ = exposure_warning(parse_serve("0.0.0.0:8080"), None)
    assert "no authentication" in open_ and "--serve-token" in open_
    assert "no authentication" not in exposure_warning(parse_serve("0.0.0.0:8080"), "t")
    assert exposure_warning(parse_serve("camera-box.local:80"), None) is not None


def test_a_busy_port_is_one_line(server):
    srv = server(["a"])
    with pytest.raises(UserError, match="cannot listen"):
        PreviewServer(parse_serve(f"127.0.0.1:{srv.port}"), ["a"]).start()


def test_ten_viewers_share_one_encode_per_frame_and_get_the_height_asked_for(server):
    srv = server(["chelsea"])
    frame = srv.frames["chelsea"]
    views = pan_zoom(photo("chelsea"), 1280, 720, 30)
    seen: list[list[np.ndarray]] = [[] for _ in range(10)]
    readers = [threading.Thread(target=lambda i=i: seen[i].extend(
        read_jpegs(srv.url + "stream/chelsea.mjpg?fps=20&height=360", 8))) for i in range(10)]
    for r in readers:
        r.start()
    deadline = time.monotonic() + 30
    published = 0
    while any(r.is_alive() for r in readers) and time.monotonic() < deadline:
        frame.write(None, views[published % len(views)].copy())
        published += 1
        time.sleep(1 / 60)
    for r in readers:
        r.join(5)
    assert all(len(s) == 8 for s in seen)
    assert all(img.shape == (360, 640, 3) for s in seen for img in s)
    # Every viewer got 8 frames, 80 in all; one encode served many of them, and never more than one a frame.
    assert frame.encodes <= published, (frame.encodes, published)
    assert frame.encodes <= 12, frame.encodes  # they share one feed: about one encode per frame delivered
    deadline = time.monotonic() + 5  # a gone viewer is noticed at its next frame
    while frame.viewers and time.monotonic() < deadline:
        frame.write(None, views[0].copy())
        time.sleep(0.05)
    assert frame.viewers == 0


def test_slow_and_never_reading_viewers_do_not_hold_the_pipeline_or_memory(server, monkeypatch, caplog, capfd):
    """The source paces the run at 30 fps: a render loop that waited for a viewer would fall behind it."""
    monkeypatch.setattr(web_server, "WRITE_TIMEOUT_S", 2.0)
    caplog.set_level(logging.DEBUG)
    srv = server(["chelsea"])

    def run_fps() -> float:
        outcome = pipeline_for(srv, [PhotoSource("chelsea", 90, fps=30, size=(1280, 720))]).run()
        return outcome.stats.snapshot(outcome.stats.last_rendered_at).fps_total.pipeline

    alone = run_fps()
    stuck = socket.create_connection(("127.0.0.1", srv.port))
    stuck.sendall(b"GET /stream/chelsea.mjpg?fps=30 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # and never reads
    slow = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    slow.request("GET", "/stream/chelsea.mjpg?fps=30")
    slow_response = slow.getresponse()
    stop = threading.Event()
    slow_read = []

    def read_slowly():
        while not stop.is_set():
            slow_read.append(len(slow_response.read(65536)))  # about half the 30 frames a second
            time.sleep(0.05)

    reader = threading.Thread(target=read_slowly)
    reader.start()
    try:
        watched = run_fps()
        frame = srv.frames["chelsea"]
        deadline = time.monotonic() + 10
        while frame.viewers > 1 and time.monotonic() < deadline:  # the slow one stays
            time.sleep(0.1)
        assert frame.viewers == 1
    finally:
        stop.set()
        reader.join(5)
        slow.close()
    assert watched >= 0.95 * alone, (alone, watched)
    assert sum(slow_read) > 0
    # The never-reading viewer was cut off once its buffers were full: what it can still read is bounded.
    stuck.settimeout(5)
    received = 0
    try:
        while chunk := stuck.recv(1 << 16):
            received += len(chunk)
    except ConnectionResetError:
        pass
    stuck.close()
    assert received < 2 << 20, received
    assert not [r for r in caplog.records if r.exc_info and r.levelno >= logging.INFO]
    assert "Traceback" not in capfd.readouterr().err


def test_a_viewer_stuck_in_a_write_costs_no_encodes(server):
    srv = server(["chelsea"])
    frame = srv.frames["chelsea"]
    views = pan_zoom(photo("chelsea"), 1280, 720, 30)
    stuck = socket.create_connection(("127.0.0.1", srv.port))
    stuck.sendall(b"GET /stream/chelsea.mjpg?fps=30 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # and never reads
    for i in range(90):  # 3 s at 30 fps: the socket buffers fill with a few frames, then its write waits
        frame.write(None, views[i % len(views)].copy())
        time.sleep(1 / 30)
    assert frame.viewers == 1
    assert frame.encodes < 30, frame.encodes
    stuck.close()


def test_stop_within_two_seconds_with_viewers_attached(server):
    srv = server(["a"])
    srv.frames["a"].write(None, np.zeros((360, 640, 3), np.uint8))
    viewer = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    viewer.request("GET", "/stream/a.mjpg")
    viewer.getresponse()
    stuck = socket.create_connection(("127.0.0.1", srv.port))
    stuck.sendall(b"GET /stream/a.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    time.sleep(0.3)
    started = time.monotonic()
    srv.stop()
    assert time.monotonic() - started < 2.0
    assert not srv._thread.is_alive()
    # Nothing left pending on the closed loop (each would be "destroyed but pending" at exit): the feeds ended.
    assert not [t for t in asyncio.all_tasks(srv._loop) if not t.done()]
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()
    stuck.close()


def test_the_metrics_states_are_the_capture_states():
    from stream.pipeline import capture, health
    from stream.web.metrics import STATES

    assert STATES == (capture.CONNECTING, capture.RUNNING, capture.RECONNECTING, capture.STALLED, capture.ENDED,
                      capture.FAILED, health.FROZEN, health.BLANK)
