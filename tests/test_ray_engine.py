"""--engine ray on a Ray the run starts on this machine: same predictions as the local engine, real
batching across streams, Ctrl-C, and one-line errors."""

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from stream.config import Config, validate
from stream.errors import UserError
from tests.conftest import ROOT, read_all_frames, run_cli, wait_for_lines

pytestmark = pytest.mark.slow
MODEL = ["--model", "efficientnet_lite0", "--backend", "onnxruntime", "--no-dashboard"]
RAY_PROCESSES = ("raylet", "gcs_server")


def by_stream(path):
    out = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        out.setdefault(record["stream"], []).append(record)
    return out


def ray_pids() -> set[int]:
    pids = set()
    for proc in psutil.process_iter(["name", "cmdline"]):
        text = " ".join([proc.info["name"] or "", *(proc.info["cmdline"] or [])])
        if any(name in text for name in RAY_PROCESSES):
            pids.add(proc.pid)
    return pids


def key_paths(value, prefix: str = "") -> set[str]:
    """Every key path of a report; a list's items are described by their first (streams share their keys)."""
    if isinstance(value, dict):
        return {p for k, v in value.items() for p in {f"{prefix}/{k}"} | key_paths(v, f"{prefix}/{k}")}
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return key_paths(value[0], prefix + "[]")
    return set()


@pytest.fixture(scope="module")
def three_clips(alternating_clip, cat_clip, long_avi):
    return [str(alternating_clip), str(cat_clip), str(long_avi)]


@pytest.mark.timeout(400)
def test_three_file_streams_match_the_local_engine_frame_for_frame_and_batch_across_streams(three_clips, tmp_path):
    sources = [a for clip in three_clips for a in ("--source", clip)]
    results = {}
    for engine in ("local", "ray"):
        preds, report = tmp_path / f"{engine}.jsonl", tmp_path / f"{engine}.json"
        result = run_cli(*sources, *MODEL, "--cache-dir", str(tmp_path / "cache"), "--engine", engine,
                         "--output", str(tmp_path / f"{engine}-{{stream}}.avi"), "--predictions", str(preds),
                         "--report", str(report), timeout=300)
        assert result.returncode == 0, result.stderr
        results[engine] = (by_stream(preds), json.loads(report.read_text()))
    (local, local_report), (remote, report) = results["local"], results["ray"]
    assert set(local) == set(remote) and len(remote) == 3
    # One orchestrator: the same report, key for key (the Ray engine adds its own section), and the same verdict
    # rule (every stream must keep up), for both engines.
    # Apart from what only the local engine has: the decisions stage (refused with --engine ray) and the rows of
    # the stage threads its CPU accounting follows (Ray's driver runs none: the stages run in the actors).
    local_only = {p for p in key_paths(local_report) if p.startswith(("/decisions", "/cpu/threads[]"))}
    assert local_only and "/cpu/threads" in key_paths(report)
    assert key_paths(local_report) - local_only == key_paths({k: v for k, v in report.items() if k != "ray"})
    assert (local_report["engine"], report["engine"]) == ("local", "ray")
    for r in (local_report, report):
        verdicts = [s["realtime"]["verdict"] for s in r["streams"]]
        expected = ("not real-time" if "not real-time" in verdicts else
                    "undecided" if "undecided" in verdicts else "real-time")
        assert r["realtime"]["verdict"] == expected, r["realtime"]
    for name, frames in local.items():
        theirs = remote[name]
        assert [r["frame"] for r in theirs] == [r["frame"] for r in frames] == list(range(len(frames)))
        for mine, other in zip(frames, theirs, strict=True):
            assert [t["index"] for t in mine["top5"]] == [t["index"] for t in other["top5"]], (name, mine["frame"])
            for a, b in zip(mine["top5"], other["top5"], strict=True):
                assert abs(a["prob"] - b["prob"]) <= 1e-5
        stream = next(s for s in report["streams"] if s["name"] == name)
        # Every frame read was classified and written: the video holds them all.
        assert stream["frames"]["read"] == stream["frames"]["processed"] == stream["frames"]["written"] == len(frames)
        assert len(read_all_frames(tmp_path / f"ray-{name}.avi")) == len(frames)
    ray = report["ray"]
    sizes = {int(n): b for n, b in ray["batch_sizes"].items()}
    assert sum(n * b for n, b in sizes.items()) == report["frames"]["processed"]
    assert max(sizes) > 1 and ray["frames_in_multi_stream_batches"] > 0, ray
    assert ray["restarts"] == {"replicas": 0, "stream_actors": 0}
    assert len(ray["replicas"]) == 1 and ray["replicas"][0]["frames"] == report["frames"]["processed"]


@pytest.mark.timeout(300)
def test_ctrl_c_leaves_playable_outputs_a_report_and_no_ray_process(long_avi, tmp_path):
    before = ray_pids()
    preds, report, video = tmp_path / "p.jsonl", tmp_path / "r.json", tmp_path / "out.avi"
    # Its own process group, signalled as a whole, as a terminal's Ctrl-C reaches the driver and every
    # process it started.
    proc = subprocess.Popen([sys.executable, str(ROOT / "run_stream.py"), "--source", str(long_avi), "--loop", *MODEL,
                             "--cache-dir", str(tmp_path / "cache"), "--engine", "ray", "--output", str(video),
                             "--predictions", str(preds), "--report", str(report)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as start_cli
    try:
        wait_for_lines(proc, preds, 20, timeout=180)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    data = json.loads(report.read_text())
    assert data["status"] == "interrupted"
    written = data["frames"]["written"]
    assert written == data["frames"]["processed"] == len(preds.read_text().splitlines()) > 0
    assert len(read_all_frames(video)) == written
    deadline = time.monotonic() + 30
    while ray_pids() - before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not ray_pids() - before, "the run left Ray processes behind"


def test_an_unreachable_cluster_is_one_line(cat_clip, tmp_path):
    result = run_cli("--source", str(cat_clip), *MODEL, "--engine", "ray", "--ray-address", "127.0.0.1:1",
                     timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "no Ray cluster answers" in result.stderr, result.stderr


@pytest.mark.timeout(200)
def test_a_replica_that_cannot_start_is_one_line_naming_why(cat_clip, tmp_path):
    result = run_cli("--source", str(cat_clip), "--model", "no_such_model", "--backend", "onnxruntime",
                     "--no-dashboard", "--engine", "ray", "--cache-dir", str(tmp_path / "cache"), timeout=180)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "could not start on Ray: unknown model 'no_such_model'" in lines[0], result.stderr


@pytest.mark.parametrize("settings, message", [
    ({"replicas": 2}, "--replicas needs --engine ray"),
    ({"engine": "ray", "replicas": 0}, "replicas"),
    ({"engine": "ray", "replica_gpus": -1.0}, "replica-gpus"),
    ({"engine": "ray", "serve": "8080"}, "--serve is not available with --engine ray"),
    ({"engine": "cluster"}, "engine"),
])
def test_bad_engine_settings_are_one_line_errors(settings, message):
    with pytest.raises(UserError, match=message):
        validate(Config(**settings))
