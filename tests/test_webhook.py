"""--webhook against receivers on loopback: one that fails first, one that never answers."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from stream.decisions.hub import wall_now
from stream.decisions.records import Event
from stream.errors import UserError
from stream.outputs import webhook
from stream.outputs.webhook import WebhookOutput, parse_webhook_url
from tests.conftest import run_cli, start_cli
from tests.events import MODEL, SOURCE_FPS, delivery, jsonl, pipeline_fps, rules_file

TOKEN = "tok-3f9a-webhook"


class Receiver:
    """An HTTP server that answers 500 to its first `failures` POSTs, then 204; it keeps every body it got."""

    def __init__(self, failures: int) -> None:
        self.calls: list[dict] = []
        self.paths: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                assert self.headers["Content-Type"] == "application/json"
                receiver.calls.append(body)
                receiver.paths.append(self.path)
                self.send_response(500 if len(receiver.calls) <= failures else 204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook?token={TOKEN}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def silent():
    """A server that accepts connections (the kernel's backlog does) and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield f"http://127.0.0.1:{s.getsockname()[1]}/hook?token={TOKEN}"


def test_a_failing_webhook_is_retried_and_every_event_arrives_once(tmp_path):
    receiver = Receiver(failures=2)
    events, report = tmp_path / "events.jsonl", tmp_path / "report.json"
    try:
        done = run_cli(*MODEL, "--rules", str(rules_file(tmp_path)), "--events", str(events), "--report",
                       str(report), "--pace", "--webhook", receiver.url)
    finally:
        receiver.stop()
    assert done.returncode == 0, done.stderr
    written = jsonl(events)
    assert len(written) >= 6
    assert receiver.calls[:3] == [written[0]] * 3  # two 500s, then accepted
    assert receiver.calls[2:] == written  # then each event once, in order
    assert all(p == f"/hook?token={TOKEN}" for p in receiver.paths)
    counts = delivery(report, "webhook:")
    assert (counts["delivered"], counts["failed"], counts["dropped"], counts["pending"]) == (len(written), 0, 0, 0)
    for text in (done.stdout, done.stderr, report.read_text()):
        assert TOKEN not in text


def test_a_webhook_that_never_answers_costs_no_frame_and_the_run_ends_within_the_grace(tmp_path, silent):
    events, report = tmp_path / "events.jsonl", tmp_path / "report.json"
    proc = start_cli(*MODEL, "--rules", str(rules_file(tmp_path)), "--events", str(events), "--report", str(report),
                     "--pace", "--webhook", silent)
    last_line, seen = None, 0
    while proc.poll() is None:  # the last event is written as the clip ends, just before the outputs close
        lines = len(events.read_text().splitlines()) if events.exists() else 0
        if lines != seen:
            last_line, seen = time.monotonic(), lines
        time.sleep(0.05)
    ended = time.monotonic()
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    written = jsonl(events)
    assert len(written) == seen >= 6
    assert ended - last_line < webhook.CLOSE_GRACE_S + 3  # the grace, plus the report and the exit
    counts = delivery(report, "webhook:")
    assert counts["delivered"] == 0 and counts["dropped"] == 0
    assert counts["failed"] + counts["pending"] == len(written) and counts["pending"] > 0
    assert pipeline_fps(report) >= 0.95 * SOURCE_FPS
    for text in (out, err, report.read_text()):
        assert TOKEN not in text


def event(i: int) -> Event:
    return Event("start", "cat", "cam0", "tabby", 0.9, i / 30, i, wall_now())


def test_a_full_queue_drops_and_close_counts_the_rest_within_the_grace(silent, monkeypatch):
    monkeypatch.setattr(webhook, "QUEUE_EVENTS", 3)
    out = WebhookOutput(silent)
    out.publish(event(0))
    while not out.in_flight:  # the worker holds it, waiting for an answer that never comes
        time.sleep(0.01)
    started = time.monotonic()
    for i in range(1, 10):
        out.publish(event(i))
    assert time.monotonic() - started < 0.5  # publishing never waits for the server
    out.close()
    assert time.monotonic() - started < webhook.CLOSE_GRACE_S + 1
    d = out.delivery()
    # one with the worker, three queued behind it, the other six dropped
    assert (d.delivered, d.failed, d.dropped, d.pending) == (0, 0, 6, 4)
    assert TOKEN not in d.output


def test_a_client_error_is_not_retried(monkeypatch):
    calls = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            calls.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(400)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        out = WebhookOutput(f"http://user:pw-for-hook@127.0.0.1:{server.server_address[1]}/x")
        out.publish(event(1))
        out.close()
    finally:
        server.shutdown()
        server.server_close()
    assert len(calls) == 1
    d = out.delivery()
    assert (d.delivered, d.failed, d.pending, d.state) == (0, 1, 0, "failing")
    assert "pw-for-hook" not in d.output


@pytest.mark.parametrize("url", ["ftp://host/x", "host/x", "http://", "http://host:99999/x", "https://host:port/",
                                 "file:///etc/passwd", f"mqtt://host/x?token={TOKEN}"])
def test_a_bad_webhook_url_is_one_line_without_its_secret(url):
    with pytest.raises(UserError) as caught:
        parse_webhook_url(url)
    assert "\n" not in str(caught.value) and TOKEN not in str(caught.value)


def test_a_bad_webhook_flag_exits_2_with_one_line(tmp_path):
    done = run_cli(*MODEL, "--rules", str(rules_file(tmp_path)), "--webhook", f"ftp://host/x?token={TOKEN}",
                   timeout=60)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert TOKEN not in done.stdout + done.stderr
