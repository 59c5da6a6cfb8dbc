"""--engine ray on a two-node cluster on this machine (a head and a worker `ray start`, one CPU each,
on loopback): placement on both nodes, a replica killed mid-run, a stream actor killed mid-run."""

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import read_all_frames, run_cli

pytestmark = pytest.mark.slow
MODEL = ["--model", "efficientnet_lite0", "--backend", "onnxruntime", "--no-dashboard"]
RAY = str(Path(sys.executable).with_name("ray"))
NAMESPACE = "stream-classifier"
# Ray 2.5x+ turns token authentication on for a `ray start --head` when ~/.ray holds a token; this
# throwaway cluster (the machine's own address: Ray maps 127.0.0.1 to it) runs without, and so must
# everything that joins it.
NO_AUTH = {"RAY_AUTH_MODE": "disabled"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_cli(*args: str) -> None:
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, **NO_AUTH}
    subprocess.run([RAY, *args], check=True, capture_output=True, text=True, timeout=120, env=env)


@pytest.fixture(scope="module")
def cluster():
    import ray

    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ.update(NO_AUTH)
    address = f"127.0.0.1:{free_port()}"
    store = str(150 * 2**20)
    try:
        ray_cli("start", "--head", "--port", address.split(":")[1], "--node-ip-address", "127.0.0.1", "--num-cpus",
                "1", "--include-dashboard", "false", "--disable-usage-stats", "--object-store-memory", store)
        ray_cli("start", "--address", address, "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
                "--disable-usage-stats", "--object-store-memory", store)
        ray.init(address=address, namespace=NAMESPACE, logging_level=logging.ERROR, log_to_driver=False)
        deadline = time.monotonic() + 30
        while len([n for n in ray.nodes() if n["Alive"]]) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        yield address
    finally:
        ray.shutdown()
        ray_cli("stop", "--force")
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved


def named(prefix: str = "", contains: str = "") -> list[dict]:
    import ray

    return [a for a in ray.util.list_named_actors(all_namespaces=True)
            if a["name"].startswith(prefix) and contains in a["name"]]


def kill_when(path: Path, lines: int, find, restart: bool, done: list) -> None:
    """Once `path` holds `lines` lines, kill the first actor `find()` names (bounded in time)."""
    import ray

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= lines and find():
            entry = find()[0]
            ray.kill(ray.get_actor(entry["name"], namespace=entry["namespace"]), no_restart=not restart)
            done.append(entry["name"])
            return
        time.sleep(0.1)


def assert_nothing_left() -> None:
    from ray import serve

    assert not named(contains="-stream-"), "stream actors left behind"
    assert not [a for a in serve.status().applications if a.startswith("stream-classifier")]


@pytest.mark.timeout(300)
def test_streams_and_replicas_are_placed_on_both_nodes(cluster, cat_clip, alternating_clip, tmp_path):
    report = tmp_path / "r.json"
    result = run_cli("--source", str(cat_clip), "--source", str(alternating_clip), *MODEL, "--engine", "ray",
                     "--ray-address", cluster, "--replicas", "2", "--replica-cpus", "1",
                     "--cache-dir", str(tmp_path / "cache"), "--report", str(report), timeout=240, env_extra=NO_AUTH)
    assert result.returncode == 0, result.stderr
    data = json.loads(report.read_text())
    ray = data["ray"]
    assert len({n["node"] for n in ray["nodes"] if n["replicas"]}) == 2, ray["nodes"]
    assert len({s["node"] for s in ray["streams"]}) == 2, ray["streams"]
    assert data["frames"]["processed"] == data["frames"]["read"] == 48
    assert_nothing_left()


@pytest.mark.timeout(300)
def test_a_replica_killed_mid_run_is_restarted_and_no_frame_of_a_file_is_lost(cluster, long_avi, tmp_path):
    report = tmp_path / "r.json"
    killed: list = []
    threading.Thread(target=kill_when, args=(tmp_path / "long.jsonl", 40, lambda: named("SERVE_REPLICA::"), False,
                                             killed), daemon=True).start()
    result = run_cli("--source", str(long_avi), "--source", str(long_avi), "--loop", "--max-frames", "200", *MODEL,
                     "--engine", "ray", "--ray-address", cluster, "--cache-dir", str(tmp_path / "cache"),
                     "--output", str(tmp_path / "{stream}.avi"), "--predictions", str(tmp_path / "{stream}.jsonl"),
                     "--report", str(report), timeout=240, env_extra=NO_AUTH)
    assert result.returncode == 0, result.stderr
    assert killed, "the replica was never killed"
    data = json.loads(report.read_text())
    ray = data["ray"]
    assert ray["restarts"]["replicas"] >= 1 and ray["retried_requests"] >= 1, ray
    assert len(ray["replicas"]) >= 2, ray["replicas"]  # the new replica served the rest
    for stream in data["streams"]:
        f, name = stream["frames"], stream["name"]
        assert f["read"] == f["processed"] == f["written"] == 200 and f["dropped"] == 0, stream
        logged = [json.loads(line)["frame"] for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
        assert logged == list(range(200))
        assert len(read_all_frames(tmp_path / f"{name}.avi")) == 200
    assert_nothing_left()


@pytest.mark.timeout(300)
def test_a_stream_actor_killed_mid_run_comes_back_and_reconnects(cluster, mjpeg_stream, tmp_path):
    preds, report, video = tmp_path / "p.jsonl", tmp_path / "r.json", tmp_path / "cam.avi"
    killed: list = []
    threading.Thread(target=kill_when, args=(preds, 5, lambda: named(contains="-stream-"), True, killed),
                     daemon=True).start()
    result = run_cli("--source", mjpeg_stream, "--reconnect", "--max-frames", "30", *MODEL, "--engine", "ray",
                     "--ray-address", cluster, "--cache-dir", str(tmp_path / "cache"), "--output", str(video),
                     "--predictions", str(preds), "--report", str(report), timeout=240, env_extra=NO_AUTH)
    assert result.returncode == 0, result.stderr
    assert killed, "the stream actor was never killed"
    data = json.loads(report.read_text())
    assert data["ray"]["restarts"]["stream_actors"] == 1, data["ray"]
    # The restarted actor wrote files of its own (the dead one's could not be finalised), and finished them.
    # A live stream keeps its newest frames: what it classified, it wrote, in the video and in the log.
    again = len((tmp_path / "p.restart1.jsonl").read_text().splitlines())
    assert 0 < again == len(read_all_frames(tmp_path / "cam.restart1.avi"))
    stream = data["streams"][0] if "streams" in data else data
    assert stream["frames"]["read"] >= 30  # the restarted actor read its --max-frames anew
    assert_nothing_left()
