"""`--serve` as users run it: a subprocess with the real model, watched over HTTP, stopped by Ctrl-C or its end."""

from __future__ import annotations

import json
import re
import signal
import socket
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import run_cli, start_cli
from tests.test_web import get, read_jpegs

pytestmark = pytest.mark.slow


def wait_for_url(proc, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        match = re.search(r"serving (http://\S+/)", line)
        if match:
            return match.group(1)
        assert line or proc.poll() is None, proc.communicate()
    raise AssertionError("the server never said where it listens")


def wait_until_running(url: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = json.loads(get(url + "api/status")[1])
        if doc["state"] == "running" and doc["frames"]["shown"] > 0:
            return doc
        time.sleep(0.2)
    raise AssertionError("no frame was shown")


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return False
    except OSError:
        return True


def test_two_streams_watched_then_ctrl_c_stops_the_server_with_the_run(cat_clip, alternating_clip, tmp_path):
    report = tmp_path / "r.json"
    proc = start_cli("--source", str(cat_clip), "--source", str(alternating_clip), "--loop", "--pace",
                     "--weights", "random", "--no-display", "--serve", "127.0.0.1:0", "--report", str(report))
    try:
        url = wait_for_url(proc)
        port = int(url.rsplit(":", 1)[1].strip("/"))
        doc = wait_until_running(url)
        assert [s["name"] for s in doc["streams"]] == ["cat", "alternating"]
        images = read_jpegs(url + "stream/alternating.mjpg?height=160&fps=10", 3)
        assert all(img.shape == (160, 240, 3) for img in images)
        status, body = get(url + "metrics")
        names = {f.name for f in text_string_to_metric_families(body.decode())}
        assert {"stream_fps", "stream_frames_shown", "stream_latency_seconds", "stream_frames_dropped",
                "stream_reconnects", "stream_state", "stream_model_only_fps", "process_resident_memory_bytes"} <= names
        assert get(url + "stream/nobody.mjpg")[0] == 404
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert refused(port)
    assert json.loads(report.read_text())["status"] == "interrupted"


def test_end_of_input_stops_the_server_and_a_busy_port_fails_before_the_model_loads(cat_clip, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("--source", str(cat_clip), "--weights", "random", "--serve", f"127.0.0.1:{port}")
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1 and "cannot listen" in result.stderr
        assert "loading" not in result.stdout
    result = run_cli("--source", str(cat_clip), "--weights", "random", "--no-display", "--serve", "127.0.0.1:0")
    assert result.returncode == 0, result.stderr
    port = int(re.search(r"serving http://127.0.0.1:(\d+)/", result.stdout).group(1))
    assert refused(port)


@pytest.mark.parametrize("args,fragment", [
    (["--serve", "nope"], "bad value for serve"),
    (["--serve-token", "t"], "--serve-token needs --serve"),
    (["--serve", "127.0.0.1:0", "--serve-token", " "], "--serve-token needs --serve and a non-empty token")])
def test_bad_serve_flags_are_one_line(args, fragment):
    result = run_cli("--source", "missing.mp4", *args)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and fragment in result.stderr


def test_a_wider_address_warns_that_there_is_no_authentication(cat_clip):
    """Tests listen on loopback only: the warning comes before the bind, so an address this machine does not
    have (TEST-NET-1, RFC 5737) shows it, then fails as one line, and nothing is ever reachable from outside."""
    result = run_cli("--source", str(cat_clip), "--weights", "random", "--serve", "192.0.2.1:0")
    assert "no authentication" in result.stderr and "--serve-token" in result.stderr
    assert result.returncode == 2 and "cannot listen" in result.stderr
