"""A service: `--keep-running --serve`, its cameras added and removed over the REST API while it runs.

Each run is a subprocess with the real model (random weights), reached over loopback HTTP; the cameras are
loopback MJPEG servers (tests.cameras) and video files. Everything is bounded in time and listens on 127.0.0.1.
"""

from __future__ import annotations

import json
import re
import signal
import time
import tomllib
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from stream.media.sample import make_clip
from stream.media.streams import StreamSpec, load_sources_file, sources_toml
from stream.web.api import mutations_allowed, openapi_document
from tests.browser import MISSING, open_chromium
from tests.cameras import Gate, LoopbackCameras
from tests.conftest import read_all_frames, run_cli, start_cli
from tests.test_browser import wait

TOKEN = "s3rvice-t0ken"
CLOSED = "http://127.0.0.1:9/nothing.mjpg"  # the discard port: nothing listens there, a connect is refused at once


class Service:
    """One `run_stream.py --keep-running --serve 127.0.0.1:0` process, driven over HTTP."""

    def __init__(self, tmp: Path, *args: str, token: str | None = TOKEN) -> None:
        self.token = token
        extra = ("--serve-token", token) if token else ()
        self.proc = start_cli("--keep-running", "--serve", "127.0.0.1:0", *extra, "--weights", "random",
                              "--no-display", "--status-every", "3600", "--report", str(tmp / "report.json"), *args)
        self.url = self._url()
        deadline = time.monotonic() + 120
        while self.call("GET", "api/status")[1].get("state") != "running":  # the model loaded, the loop under way
            assert time.monotonic() < deadline and self.proc.poll() is None, "the service never ran"
            time.sleep(0.2)

    def _url(self) -> str:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            found = re.search(r"serving (http://\S+/)", line)
            if found:
                return found.group(1)
            assert line or self.proc.poll() is None, self.proc.communicate()
        raise AssertionError("the service never said where it listens")

    def call(self, method: str, path: str, body=None, headers: dict | None = None, token: bool = True,
             timeout: float = 30) -> tuple[int, dict | str]:
        sent = {"Content-Type": "application/json"} if body is not None else {}
        if token and self.token:
            sent["Authorization"] = f"Bearer {self.token}"
        sent.update(headers or {})
        data = body if isinstance(body, bytes) else None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, headers=sent, method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as r:
                status, raw, kind = r.status, r.read(), r.headers.get_content_type()
        except urllib.error.HTTPError as e:
            status, raw, kind = e.code, e.read(), e.headers.get_content_type()
        return status, json.loads(raw) if kind == "application/json" else raw.decode()

    def add(self, uri: str, name: str | None = None, **more) -> tuple[int, dict]:
        return self.call("POST", "api/streams", {"uri": uri, **({"name": name} if name else {}), **more})

    def remove(self, name: str) -> tuple[int, dict]:
        return self.call("DELETE", f"api/streams/{name}")

    def streams(self) -> dict[str, dict]:
        status, doc = self.call("GET", "api/streams")
        assert status == 200, doc
        return {s["name"]: s for s in doc["streams"]}

    def shown(self, name: str) -> int:
        frames = self.streams()[name]["frames"]
        return frames["shown"] if frames else 0

    def wait(self, predicate, timeout: float = 60, what: str = "the service") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            assert self.proc.poll() is None, self.proc.communicate()
            time.sleep(0.2)

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str, str]:
        self.proc.send_signal(sig)
        out, err = self.proc.communicate(timeout=60)
        return self.proc.returncode, out, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@pytest.fixture
def services(tmp_path):
    started: list[Service] = []

    def start(*args: str, token: str | None = TOKEN) -> Service:
        service = Service(tmp_path, *args, token=token)
        started.append(service)
        return service

    yield start
    for service in started:
        service.kill()


@pytest.fixture(scope="module")
def walk_clip(tmp_path_factory) -> Path:
    """300 frames at 30 fps (10 s read at its own pace): long enough to be removed half way."""
    return make_clip(tmp_path_factory.mktemp("service") / "walk.mp4", images=("coffee",), width=320, height=240,
                     frames_per_image=300)


@pytest.fixture
def cameras():
    with LoopbackCameras(3, fps=15) as cams:
        yield cams


# ---- the REST API, end to end

@pytest.mark.slow
def test_a_service_started_with_no_stream_takes_cameras_and_lets_them_go(services, cameras, walk_clip, tmp_path):
    service = services("--pace", "--output", str(tmp_path / "{stream}.mp4"))
    assert service.streams() == {}
    secret_url = cameras.url(0).replace("http://", "http://admin:pa55word@")
    status, door = service.add(secret_url, "door", target_fps=15)
    assert status == 201, door
    assert door["name"] == "door" and door["uri"].startswith("http://***:***@127.0.0.1") and door["target_fps"] == 15
    status, made = service.add(cameras.url(1))  # no name: one is made from the URI
    assert status == 201 and made["name"].startswith("127.0.0.1-") and made["name"].endswith("cam1.mjpg")
    status, walk = service.add(str(walk_clip), "walk")
    assert status == 201, walk
    names = ["door", made["name"], "walk"]
    service.wait(lambda: all(service.shown(n) >= 15 for n in names), what="three streams' frames")
    listed = service.streams()
    assert list(listed) == names and all(s["state"] == "running" for s in listed.values())
    assert "pa55word" not in json.dumps(listed)
    status, one = service.call("GET", "api/streams/door")
    assert status == 200 and one["name"] == "door" and one["frames"]["shown"] >= 15

    # Removed mid-file: answered once its mp4 is finalised, playable to its last frame.
    status, removed = service.remove("walk")
    assert status == 200, removed
    video = next(o for o in removed["outputs"] if o["kind"] == "video")
    assert 15 <= video["written"] < 300
    assert len(read_all_frames(video["path"])) == video["written"]
    assert "walk" not in service.streams() and service.remove("walk")[0] == 404
    assert service.call("GET", "stream/walk.mjpg")[0] == 404  # its preview went with it

    # Refused, each with one line, while the others run on.
    before = {n: service.shown(n) for n in ("door", made["name"])}
    started = time.monotonic()
    status, bad = service.add(CLOSED, "ghost")
    assert status == 422 and "cannot open stream" in bad["error"] and "\n" not in bad["error"]
    assert time.monotonic() - started < 10
    assert service.call("GET", "api/streams/ghost")[0] == 404  # nothing left behind
    for body, code in (({"uri": ""}, 400), ({"uri": "x", "name": "../up"}, 400), ({"uri": "x", "target_fps": 0}, 400),
                       ({"uri": "x", "colour": "red"}, 400), ({"uri": str(walk_clip), "name": "door"}, 409),
                       ({"uri": str(tmp_path / "missing.mp4")}, 422)):
        status, doc = service.call("POST", "api/streams", body)
        assert status == code and doc["error"], (body, status, doc)
    assert service.call("POST", "api/streams", b"not json")[0] == 400
    assert service.call("POST", "api/streams", b'{"uri": "' + b"x" * 20000 + b'"}')[0] == 413
    assert service.call("POST", "api/streams", {"uri": str(walk_clip)}, token=False)[0] == 401
    assert service.call("DELETE", "api/streams/door", token=False)[0] == 401
    assert service.call("POST", "api/streams", {"uri": str(walk_clip)}, headers={"Host": "evil.example"})[0] == 403
    assert service.call("POST", "api/streams", b"uri=x",
                        headers={"Content-Type": "application/x-www-form-urlencoded"})[0] == 415
    assert service.call("POST", "api/streams", b"uri=x", headers={"Content-Type": "text/plain"})[0] == 415
    service.wait(lambda: all(service.shown(n) > before[n] + 15 for n in before), what="the others' frames to grow")
    assert set(service.streams()) == {"door", made["name"]}
    assert all(s["state"] == "running" for s in service.streams().values())

    # The failed name is free: a working source takes it.
    status, ghost = service.add(cameras.url(2), "ghost")
    assert status == 201, ghost
    code, out, err = service.stop(signal.SIGTERM)
    assert code == 143, err
    assert "Traceback" not in err and "pa55word" not in out + err
    report = json.loads((tmp_path / "report.json").read_text())
    rows = {r["name"]: r for r in report["streams"]}
    assert rows["walk"]["state"] == "removed" and rows["door"]["frames"]["written"] > 30
    assert "pa55word" not in json.dumps(report)
    assert len(read_all_frames(tmp_path / "door.mp4")) == rows["door"]["frames"]["written"]


@pytest.mark.slow
def test_keep_running_stays_up_when_its_streams_end_and_ends_only_on_a_signal(services, tmp_path, long_avi):
    """`--keep-running`: the only stream's file ends, the run waits on; SIGINT ends it (exit 130)."""
    service = services("--source", str(long_avi), "--max-frames", "40", token=None)
    service.wait(lambda: service.streams()["long"]["state"] == "ended", what="the file to end")
    time.sleep(2.0)
    assert service.proc.poll() is None  # still up, with nothing to read
    status, removed = service.remove("long")
    assert status == 200 and service.streams() == {}
    time.sleep(1.0)
    assert service.proc.poll() is None  # up with no stream at all
    code, out, err = service.stop(signal.SIGINT)
    assert code == 130, err
    assert json.loads((tmp_path / "report.json").read_text())["status"] == "interrupted"


@pytest.mark.slow
def test_a_stop_while_a_dead_camera_is_being_added_ends_well_within_a_supervisors_grace(services, cameras, tmp_path):
    """The add blocks for the 10 s open timeout in a thread of its own, which must not hold the process's exit."""
    service = services("--output", str(tmp_path / "{stream}.mp4"), token=None)
    assert service.add(cameras.url(0), "steady")[0] == 201
    service.wait(lambda: service.shown("steady") >= 10, what="the steady camera's frames")
    gate = Gate(cameras.server.server_address[1])
    gate.hang()
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(service.call, "POST", "api/streams", {"uri": gate.url("cam0.mjpg"), "name": "dead"})
        service.wait(lambda: gate.hung_connections == 1, timeout=5, what="the dead camera's connection")
        asked = time.monotonic()
        code, out, err = service.stop(signal.SIGTERM)
        took = time.monotonic() - asked
        with pytest.raises(OSError):  # the server closed with the run, before the add could be answered
            pending.result()
    gate.close()
    assert code == 143 and took < 5, (code, took, err)
    assert "Traceback" not in err
    written = json.loads((tmp_path / "report.json").read_text())["frames"]["written"]  # one stream: the run's
    assert len(read_all_frames(tmp_path / "steady.mp4")) == written >= 10


# ---- 200 cameras come and go

def _figures(proc: psutil.Process) -> tuple[int, int, float]:
    return proc.num_threads(), proc.num_fds(), proc.memory_info().rss / 2**20


@pytest.mark.slow
def test_200_add_remove_cycles_leave_threads_descriptors_and_memory_flat(services, cameras, tmp_path):
    service = services("--predictions", str(tmp_path / "all.jsonl"), token=None)
    assert service.add(cameras.url(0), "steady")[0] == 201
    # Four cameras whose network died (accepted, never answered) block their adds for the 10 s open timeout, side
    # by side, in threads of their own: not on the server's loop nor the run's, so the service answers at once and
    # the steady camera runs on.
    gate = Gate(cameras.server.server_address[1])
    gate.hang()
    with ThreadPoolExecutor(4) as pool:
        hung = [pool.submit(service.add, gate.url(f"cam{i}.mjpg"), f"dead{i}") for i in range(4)]
        service.wait(lambda: gate.hung_connections == 4, timeout=5, what="the four dead cameras' connections")
        before, asked = service.shown("steady"), time.monotonic()
        assert service.streams().keys() == {"steady"} and time.monotonic() - asked < 1.0
        service.wait(lambda: service.shown("steady") >= before + 15, timeout=5, what="the steady camera's frames")
        assert all(not h.done() for h in hung)
        assert [h.result()[0] for h in hung] == [422] * 4
    gate.close()
    assert service.streams().keys() == {"steady"}
    process = psutil.Process(service.proc.pid)
    samples, started = {}, time.monotonic()
    for cycle in range(200):
        uri = cameras.url(1 + cycle % 2)
        status, doc = service.add(uri, "visitor")
        assert status == 201, (cycle, doc)
        if cycle % 20 == 0:  # now and then it runs a while first; otherwise it leaves while it connects
            service.wait(lambda: service.shown("visitor") >= 1, what="the visitor's first frame")
        status, doc = service.remove("visitor")
        assert status == 200, (cycle, doc)
        status, doc = service.add(CLOSED, "visitor")  # a camera that is down: refused, nothing left behind
        assert status == 422, (cycle, doc)
        if cycle in (19, 199):
            time.sleep(1.0)  # the last capture thread's read returns and it ends
            samples[cycle + 1] = _figures(process)
    elapsed = time.monotonic() - started
    (threads0, fds0, rss0), (threads1, fds1, rss1) = samples[20], samples[200]
    print(f"\n200 add/remove cycles (and 200 refused adds) in {elapsed:.0f} s; after 20: {threads0} threads, "
          f"{fds0} fds, {rss0:.0f} MB RSS; after 200: {threads1} threads, {fds1} fds, {rss1:.0f} MB RSS")
    assert elapsed < 240
    assert threads1 == threads0
    assert fds1 <= fds0 + 2
    assert rss1 - rss0 < 40  # 180 report rows (bounded collectors) and allocator noise
    assert service.streams()["steady"]["state"] == "running"
    assert service.stop()[0] == 143


# ---- --persist

@pytest.mark.slow
def test_persist_rewrites_the_sources_file_and_a_restart_finds_the_same_cameras(services, cameras, walk_clip,
                                                                                  tmp_path):
    sources = tmp_path / "cameras.toml"
    sources.write_text(f'# my cameras\n[[source]]\nuri = "{cameras.url(0)}"\nname = "door"\n\n'
                       f'[[source]]\nuri = "{cameras.url(1)}"\ntarget_fps = 10\n')
    sources.chmod(0o600)
    made = load_sources_file(str(sources))[1].name
    service = services("--sources", str(sources), "--persist", "--source", str(walk_clip), "--loop", token=None)
    assert set(service.streams()) == {"walk", "door", made}
    assert service.add(cameras.url(2), "yard", target_fps=12.5)[0] == 201
    assert service.remove("door")[0] == 200
    assert service.add(CLOSED, "ghost")[0] == 422
    entries = tomllib.loads(sources.read_text())["source"]
    # The file's streams and the one added, by name; the --source stream stays on the command line.
    assert entries == [{"uri": cameras.url(1), "name": made, "target_fps": 10.0},
                       {"uri": cameras.url(2), "name": "yard", "target_fps": 12.5}]
    assert sources.stat().st_mode & 0o777 == 0o600  # it may hold credentials
    assert not list(tmp_path.glob(".cameras.partial-*"))
    assert service.stop()[0] == 143

    again = services("--sources", str(sources), "--persist", token=None)
    listed = again.streams()
    assert list(listed) == [made, "yard"] and listed["yard"]["target_fps"] == 12.5
    again.wait(lambda: all(again.shown(n) > 0 for n in listed), what="the restored cameras' frames")
    for name in list(listed):
        assert again.remove(name)[0] == 200
    assert load_sources_file(str(sources), allow_empty=True) == []  # every camera gone: a service still starts
    assert again.stop()[0] == 143


@pytest.mark.slow
def test_a_camera_down_at_start_waits_outside_the_run_and_joins_when_it_answers(services, cameras, tmp_path):
    """One dead camera at boot neither stops the service nor leaves its sources file; it joins when it is back, and
    one that is never back is said in the report, not a fault."""
    cameras.outage(1, 8.0)  # answers 503 for the first 8 s
    secret = CLOSED.replace("http://", "http://admin:pa55word@")
    sources = tmp_path / "cameras.toml"
    sources.write_text(f'[[source]]\nuri = "{cameras.url(0)}"\nname = "door"\n\n'
                       f'[[source]]\nuri = "{cameras.url(1)}"\nname = "porch"\n\n'
                       f'[[source]]\nuri = "{secret}"\nname = "attic"\n\n'
                       f'[[source]]\nuri = "{CLOSED}"\nname = "shed"\n')
    service = services("--sources", str(sources), "--persist", token=None)
    listed = service.streams()
    assert list(listed) == ["door", "porch", "attic", "shed"]
    assert listed["door"]["state"] != "waiting" and listed["porch"]["state"] == "waiting"
    assert listed["attic"]["attempts"] >= 1 and "cannot open stream" in listed["attic"]["error"]
    assert "pa55word" not in json.dumps(listed)
    assert service.add(cameras.url(2), "porch")[0] == 409  # a waiting stream's name is taken
    metrics = service.call("GET", "metrics")[1]
    assert 'stream_waiting{stream="porch"} 1.0' in metrics and 'stream_waiting{stream="door"}' not in metrics
    page = service.call("GET", "api/status")[1]  # the page's tiles for the waiting ones
    assert {w["name"] for w in page["waiting"]} == {"porch", "attic", "shed"} and "pa55word" not in json.dumps(page)
    assert service.remove("shed")[0] == 200  # a waiting camera can be given up
    names = [e["name"] for e in tomllib.loads(sources.read_text())["source"]]
    assert names == ["door", "porch", "attic"]  # rewritten on the removal: the waiting ones are still listed
    service.wait(lambda: service.streams()["porch"]["state"] != "waiting" and service.shown("porch") > 0, timeout=90,
                 what="the camera back from its outage to join and show frames")
    assert service.shown("door") > 0 and service.streams()["attic"]["state"] == "waiting"
    assert 'stream_waiting{stream="porch"}' not in service.call("GET", "metrics")[1]
    code, out, err = service.stop()
    assert code == 143, err
    assert "pa55word" not in out + err
    report = json.loads((tmp_path / "report.json").read_text())
    never = [w for w in report["warnings"] if "never answered" in w]
    assert len(never) == 1 and "'attic'" in never[0] and "pa55word" not in never[0], report["warnings"]
    assert {s["name"] for s in report["streams"]} >= {"door", "porch"}
    assert [e["name"] for e in tomllib.loads(sources.read_text())["source"]] == ["door", "porch", "attic"]


@pytest.mark.slow
def test_a_stop_while_a_waiting_camera_is_tried_again_is_not_held_up_by_it(services, cameras, tmp_path):
    gate = Gate(cameras.server.server_address[1])
    gate.hang()  # accepted, never answered: each attempt blocks for the 10 s open timeout
    sources = tmp_path / "cameras.toml"
    sources.write_text(f'[[source]]\nuri = "{cameras.url(0)}"\nname = "steady"\n\n'
                       f'[[source]]\nuri = "{gate.url("cam1.mjpg")}"\nname = "dead"\n')
    service = services("--sources", str(sources), token=None)
    assert service.streams()["dead"]["state"] == "waiting"
    service.wait(lambda: gate.hung_connections >= 2, timeout=20, what="the waiting camera's second attempt")
    asked = time.monotonic()
    code, out, err = service.stop(signal.SIGTERM)
    took = time.monotonic() - asked
    gate.close()
    assert code == 143 and took < 5, (code, took, err)
    assert "Traceback" not in err


def test_a_run_that_is_not_a_service_still_refuses_a_dead_camera_at_once(tmp_path):
    result = run_cli("--source", CLOSED, "--weights", "random", "--no-display", timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "cannot open stream" in result.stderr


def test_persist_needs_a_sources_file():
    result = run_cli("--persist", "--keep-running")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "--persist needs --sources" in result.stderr


def test_the_sources_file_reads_back_what_was_written(tmp_path):
    specs = [StreamSpec('rtsp://a:p"w\\@cam/s1?x=1\x7f', "door", 15.0), StreamSpec("clips/yard.mp4", "yard"),
             StreamSpec("0", "camera0", 1e-05)]
    path = tmp_path / "s.toml"
    path.write_text(sources_toml(specs))
    assert load_sources_file(str(path)) == specs
    path.write_text(sources_toml([]))
    assert load_sources_file(str(path), allow_empty=True) == []


# ---- the API's document, guard and fuzzing

def test_the_openapi_document_is_valid():
    from openapi_spec_validator import validate

    validate(openapi_document())


@pytest.mark.parametrize("host,token,allowed", [
    ("127.0.0.1", None, True), ("::1", None, True), ("localhost", None, True), ("127.0.0.2", None, True),
    ("0.0.0.0", None, False), ("::", None, False), ("192.0.2.1", None, False), ("cams.example", None, False),
    ("0.0.0.0", "t", True), ("192.0.2.1", "t", True)])
def test_changes_beyond_loopback_need_a_token(host, token, allowed):
    assert mutations_allowed(host, token) is allowed


class FakeControl:
    def streams(self):
        return [{"name": "gate", "uri": "rtsp://***:***@10.0.0.7/s1", "target_fps": 15.0}]


def test_served_widely_without_a_token_streams_appear_by_name_only():
    from stream.web.api import StreamsApi

    for host, token, shown in (("0.0.0.0", None, None), ("0.0.0.0", "t", "rtsp://***:***@10.0.0.7/s1"),
                               ("127.0.0.1", None, "rtsp://***:***@10.0.0.7/s1")):
        api = StreamsApi(lambda: None, lambda: [], host, token)
        api.control = FakeControl()
        try:
            [status] = api._statuses()
        finally:
            api.close()
        assert status["name"] == "gate" and status["state"] == "starting" and status["uri"] == shown


class WaitingFake:
    def streams(self):
        return [{"name": "yard", "uri": "rtsp://***:***@10.0.0.9/s1", "target_fps": None, "state": "waiting",
                 "attempts": 3, "error": "cannot open stream rtsp://***:***@10.0.0.9/s1 (timed out)"}]


def test_the_page_shows_a_waiting_cameras_error_only_where_changes_are_allowed():
    from stream.web.address import parse_serve
    from stream.web.server import PreviewServer

    for serve, token, with_error in (("0.0.0.0:0", None, False), ("0.0.0.0:0", "t", True),
                                     ("127.0.0.1:0", None, True)):
        server = PreviewServer(parse_serve(serve), [], token=token)
        server.control = WaitingFake()
        try:
            rows = server.api.waiting()  # /api/status's "waiting" (the page's tiles); the server is not started
            [listed] = server.api._statuses()  # GET /api/streams
        finally:
            server.api.close()
        expected = {"name": "yard", "attempts": 3}
        if with_error:  # the error names the camera's host, as the URI does
            expected["error"] = "cannot open stream rtsp://***:***@10.0.0.9/s1 (timed out)"
        assert rows == [expected], serve
        assert listed["attempts"] == 3 and listed.get("error") == expected.get("error"), serve


@pytest.mark.slow
def test_fuzzing_the_api_finds_no_server_error(services):
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    service = services(token=None)
    schema = schemathesis.openapi.from_url(service.url + "api/openapi.json")
    tried = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(mode))
            def fuzz(case):
                response = case.call(base_url=service.url.rstrip("/"), timeout=30)
                tried.append((case.method, response.status_code))
                # No 5xx, and every answer as the document describes it (status, media type, body).
                case.validate_response(response, checks=[not_a_server_error, status_code_conformance,
                                                         content_type_conformance, response_schema_conformance])

            try:
                fuzz()
            except Unsatisfiable:  # nothing to make invalid (GET /api/streams takes no parameter)
                assert mode is GenerationMode.NEGATIVE
    codes = sorted({code for _, code in tried})
    print(f"\n{len(tried)} requests, statuses {codes}")
    assert len({method for method, _ in tried}) == 3 and all(code < 500 for code in codes)
    assert service.proc.poll() is None
    assert service.stop()[0] == 143


# ---- the page's controls, in a real browser

@pytest.mark.slow
@pytest.mark.skipif(MISSING is not None, reason=MISSING or "")
def test_a_stream_added_on_the_page_appears_live_and_goes_when_removed(services, cameras, tmp_path):
    pytest.importorskip("selenium")
    service = services()
    browser = open_chromium(tmp_path / "profile")
    try:
        browser.get(f"{service.url}?token={TOKEN}")  # the page passes its token on to every call
        form = browser.find_element("css selector", "form#add")
        form.find_element("name", "uri").send_keys(cameras.url(0))
        form.find_element("name", "name").send_keys("porch")
        form.find_element("css selector", "button[type=submit]").click()
        tile = wait(lambda: next(iter(browser.find_elements("css selector", 'section.tile[data-stream="porch"]')),
                                 None))
        image = tile.find_element("css selector", "img")
        wait(lambda: browser.execute_script("return arguments[0].naturalWidth", image) > 0)
        first = image.screenshot_as_png
        wait(lambda: image.screenshot_as_png != first)  # live
        assert "porch" in service.streams()
        tile.find_element("css selector", "button.remove").click()
        wait(lambda: not browser.find_elements("css selector", 'section.tile[data-stream="porch"]'))
        assert service.streams() == {}
        assert "porch removed" in browser.find_element("id", "message").text
        # A refusal is shown on the page as the server's one line.
        form.find_element("name", "uri").send_keys(CLOSED)
        form.find_element("css selector", "button[type=submit]").click()
        wait(lambda: "HTTP 422" in browser.find_element("id", "message").text)
        assert not browser.find_elements("css selector", "section.tile")
    finally:
        browser.quit()
