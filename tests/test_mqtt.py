"""--mqtt against a real broker (Debian's mosquitto, started per test on a free loopback port)."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from stream.decisions.hub import wall_now
from stream.decisions.records import Event
from stream.errors import UserError
from stream.frames import Steady
from stream.outputs import mqtt as mqtt_output
from stream.outputs.mqtt import MqttOutput, parse_mqtt_url
from tests.conftest import run_cli, start_cli, wait_for_lines
from tests.events import MODEL, SOURCE_FPS, delivery, free_port, jsonl, pipeline_fps, rules_file

MOSQUITTO = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
USER, PASSWORD = "watcher7", "Pa55-for-mqtt"


class Broker:
    """mosquitto on loopback; `persistent` keeps sessions and queued messages across a restart (SIGTERM)."""

    def __init__(self, folder: Path, persistent: bool = False) -> None:
        self.folder, self.persistent, self.port = folder, persistent, free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        if self.persistent:
            conf = self.folder / "mosquitto.conf"
            conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
                            f"persistence_location {self.folder}/\n")
            cmd = [MOSQUITTO, "-c", str(conf)]
        else:
            cmd = [MOSQUITTO, "-p", str(self.port)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                assert self.proc.poll() is None, "mosquitto did not start"
                time.sleep(0.05)
        raise AssertionError("mosquitto did not listen")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def broker(tmp_path):
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto; .ci/run does)")
    started = []

    def make(persistent: bool = False) -> Broker:
        folder = tmp_path / f"broker{len(started)}"
        folder.mkdir()
        b = Broker(folder, persistent)
        b.start()
        started.append(b)
        return b

    yield make
    for b in started:
        b.stop()


class Listener:
    """A paho subscriber that records every message; with a client id its session outlives a disconnect."""

    def __init__(self, port: int, topic: str, client_id: str | None = None) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, str, bool]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or "",
                                  clean_session=client_id is None)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_message = self._message
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.connect("127.0.0.1", port, keepalive=5)
        self.client.loop_start()

    def _message(self, client, userdata, msg) -> None:
        with self.lock:
            self.messages.append((msg.topic, msg.payload.decode(), bool(msg.retain)))

    def on(self, topic: str) -> list[str]:
        with self.lock:
            return [payload for t, payload, _ in self.messages if t == topic]

    def wait(self, condition, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, self.messages[-20:]
            time.sleep(0.05)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def mqtt_run(tmp_path: Path, port: int, *extra: str) -> tuple[subprocess.Popen, Path, Path]:
    events, report = tmp_path / "events.jsonl", tmp_path / "report.json"
    proc = start_cli(*MODEL, "--rules", str(rules_file(tmp_path)), "--events", str(events), "--report", str(report),
                     "--pace", "--mqtt", f"mqtt://{USER}:{PASSWORD}@127.0.0.1:{port}/cam", *extra)
    return proc, events, report


def test_a_run_sends_each_event_the_retained_label_and_its_availability(tmp_path, broker):
    b = broker()
    sub = Listener(b.port, "cam/#")
    proc, events, report = mqtt_run(tmp_path, b.port, "--loop", "--max-frames", "300")
    wait_for_lines(proc, events, 1)
    late = Listener(b.port, "cam/#")  # joins mid-run: the broker hands it what is retained
    late.wait(lambda: any(t == "cam/sample/label" and r for t, _, r in late.messages)
              and ("cam/available", "online", True) in late.messages, timeout=10)
    label = json.loads(next(p for t, p, r in late.messages if t == "cam/sample/label"))
    assert set(label) == {"label", "prob", "since_s"} and label["label"]
    late.close()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    written = jsonl(events)
    assert len(written) >= 6
    sub.wait(lambda: sub.on("cam/available")[-1:] == ["offline"])
    assert [json.loads(p) for p in sub.on("cam/events")] == written  # in order, none lost, none doubled
    labels = sub.on("cam/sample/label")
    assert len(labels) == len(set(labels)) > 2  # on change only
    assert labels[-1] == ""  # the ended stream's retained label is cleared
    assert sub.on("cam/available")[0] == "online"
    sub.close()
    counts = delivery(report, "mqtt:")
    assert (counts["delivered"], counts["failed"], counts["dropped"], counts["pending"]) == (len(written), 0, 0, 0)
    for text in (out, err, report.read_text()):
        assert PASSWORD not in text and USER not in text


def test_the_broker_publishes_the_last_will_when_the_run_is_killed(tmp_path, broker):
    b = broker()
    sub = Listener(b.port, "cam/available")
    proc, events, _ = mqtt_run(tmp_path, b.port, "--loop", "--max-frames", "3000")
    try:
        sub.wait(lambda: sub.on("cam/available") == ["online"], timeout=60)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        sub.wait(lambda: sub.on("cam/available") == ["online", "offline"], timeout=10)
    finally:
        proc.kill()
        proc.communicate()
        sub.close()


def test_events_while_the_broker_is_down_are_delivered_after_it_returns_and_the_video_keeps_its_pace(
        tmp_path, broker):
    b = broker(persistent=True)
    sub = Listener(b.port, "cam/events", client_id="outage-watcher")  # its queue survives the restart
    proc, events, report = mqtt_run(tmp_path, b.port, "--loop", "--max-frames", "900")
    try:
        wait_for_lines(proc, events, 1)
        down = wall_now()
        b.stop()
        time.sleep(10)
        up = wall_now()
        b.start()
        out, err = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    written = jsonl(events)
    assert [e for e in written if down < e["wall_time"] < up], "no event happened while the broker was down"
    sub.wait(lambda: all(e in [json.loads(p) for p in sub.on("cam/events")] for e in written))
    sub.close()
    counts = delivery(report, "mqtt:")
    assert (counts["delivered"], counts["failed"], counts["dropped"], counts["pending"]) == (len(written), 0, 0, 0)
    assert pipeline_fps(report) >= 0.95 * SOURCE_FPS


@pytest.mark.parametrize("url", ["tcp://broker/cam", "mqtt://broker", "mqtt://broker/", "mqtt:///cam",
                                 "mqtt://broker:99999/cam", "mqtt://broker:port/cam", "mqtt://broker/cam/+/x",
                                 "mqtt://broker/cam/#", "mqtt://broker/a//b", "mqtt://broker/$SYS",
                                 "mqtt://broker/cam?x=1", f"mqtt://{USER}:{PASSWORD}@broker/cam/#", "broker/cam"])
def test_a_bad_mqtt_url_is_one_line_without_its_password(url):
    with pytest.raises(UserError) as caught:
        parse_mqtt_url(url)
    assert "\n" not in str(caught.value) and PASSWORD not in str(caught.value)


def test_a_good_mqtt_url_gives_the_broker_prefix_and_login():
    t = parse_mqtt_url(f"mqtt://{USER}:{PASSWORD}@broker.lan/home/cams")
    assert (t.host, t.port, t.prefix, t.username, t.password, t.tls) == ("broker.lan", 1883, "home/cams", USER,
                                                                        PASSWORD, False)
    assert PASSWORD not in t.shown and USER not in t.shown
    assert (parse_mqtt_url("mqtts://b:9000/x").port, parse_mqtt_url("mqtts://b/x").port) == (9000, 8883)


def test_a_bad_mqtt_flag_exits_2_with_one_line(tmp_path):
    done = run_cli(*MODEL, "--rules", str(rules_file(tmp_path)), "--mqtt", f"mqtt://{USER}:{PASSWORD}@b/cam/#",
                   timeout=60)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert PASSWORD not in done.stdout + done.stderr and USER not in done.stdout + done.stderr


def event(i: int) -> Event:
    return Event("start", "cat", "cam0", "tabby", 0.9, i / 30, i, wall_now())


def test_a_dead_broker_costs_the_caller_nothing_and_what_it_could_not_send_is_counted(monkeypatch):
    monkeypatch.setattr(mqtt_output, "MAX_QUEUED", 5)
    started = time.monotonic()
    out = MqttOutput(f"mqtt://127.0.0.1:{free_port()}/cam")  # nothing listens there
    out.steady("cam0", Steady("tabby", 0.9, 0.0))
    for i in range(8):
        out.publish(event(i))
    assert time.monotonic() - started < 1  # connect_async: nothing waited for the broker
    d = out.delivery()
    # paho's queue holds 5 messages: the label and 4 events; the other 4 events are dropped
    assert (d.delivered, d.failed, d.dropped, d.pending, d.state) == (0, 0, 4, 4, "disconnected")
    started = time.monotonic()
    out.close()
    assert time.monotonic() - started < mqtt_output.JOIN_S + 1  # nothing to wait for: the broker is down
    assert out.delivery().pending == 4
