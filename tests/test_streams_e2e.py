"""Several streams in one process, end to end, against loopback cameras that fail as real ones do."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

from tests.cameras import LoopbackCameras, read_stamp
from tests.conftest import ROOT, read_all_frames, run_cli, start_cli, wait_for_lines

pytestmark = pytest.mark.slow
MODEL = ["--model", "efficientnet_lite0", "--backend", "onnxruntime"]


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def read_rate(records, seqs, sent_at, window) -> float:
    """A stream's frames read per second over `window` (on the cameras' clock): its logged frames whose
    camera frame was sent in the window bound it, and the rate is the reader's own, read indices (dropped
    frames count) over capture times, so a camera's burst or a buffer cannot stand in for the pace."""
    inside = [r for r, seq in zip(records, seqs, strict=True) if window[0] <= sent_at[seq] <= window[1]]
    first, last = inside[0], inside[-1]
    return (last["frame"] - first["frame"]) / (last["time_s"] - first["time_s"])


def run_streams(cameras, tmp_path, tag, frames, extra=(), during=None):
    """A CLI run on every camera; `during(start)` runs in a thread once the process has started."""
    args = [a for i in range(len(cameras.views)) for a in ("--source", cameras.url(i))]
    out, preds, report = tmp_path / f"{tag}-{{stream}}.avi", tmp_path / f"{tag}.jsonl", tmp_path / f"{tag}.json"
    if during:
        threading.Thread(target=during, args=(time.monotonic(),), daemon=True).start()
    result = run_cli(*args, *MODEL, "--cache-dir", str(tmp_path / "cache"), "--max-frames", str(frames),
                     "--output", str(out), "--predictions", str(preds), "--report", str(report), *extra,
                     timeout=240)
    return result, json.loads(report.read_text()), lines(preds)


def stamps_of(path) -> list[int | None]:
    return [read_stamp(f) for f in read_all_frames(path)]


@pytest.mark.timeout(600)
def test_four_cameras_one_drops_and_returns_the_others_keep_their_pace(tmp_path):
    frames = 210  # 7 s at 30 fps: the others run on well past camera 2's return (2 s out, then its backoff)
    with LoopbackCameras(4) as cameras:
        # Also fills the model cache, so that the faulted run starts in a second or two.
        base_result, _, _ = run_streams(cameras, tmp_path, "base", 150)
        assert base_result.returncode == 0, base_result.stderr
        down_at = []

        def fault(start):  # camera 2 goes away for 2 s once every stream is going
            log = tmp_path / "fault.jsonl"
            while time.monotonic() < start + 120 and (
                    not log.exists() or len({json.loads(line)["stream"] for line in log.read_text().splitlines()
                                             if line.endswith("}")}) < 4):
                time.sleep(0.05)
            time.sleep(1.0)
            down_at.append(time.monotonic())
            cameras.outage(2, 2.0)

        result, report, logged = run_streams(cameras, tmp_path, "fault", frames, during=fault)
    assert result.returncode == 0, result.stderr
    streams = {s["name"]: s for s in report["streams"]}
    names = [s["name"] for s in report["streams"]]
    faulted = streams[names[2]]
    assert faulted["reconnects"] >= 1 and faulted["state"] == "ended", faulted
    # From the outage to camera 2's first frame on its new connection.
    away = (down_at[0], min(t for t in cameras.sent_at[2].values() if t >= down_at[0] + 2.0))
    for i, name in enumerate(names):
        s = streams[name]
        assert s["frames"]["read"] == frames and s["frames"]["processed"] + s["frames"]["dropped"] == frames
        # No frame invented or repeated: the cameras' own sequence numbers only ever go up, each output
        # frame carries a real one, and the log and the video agree frame for frame.
        seqs = stamps_of(tmp_path / f"fault-{name}.avi")
        assert None not in seqs and all(a < b for a, b in zip(seqs, seqs[1:], strict=False)), name
        mine = [r for r in logged if r["stream"] == name]
        assert len(mine) == len(seqs) == s["frames"]["written"]
        assert [r["frame"] for r in mine] == sorted({r["frame"] for r in mine})
        if i != 2:  # the others kept their camera's pace all the while camera 2 was away
            assert s["reconnects"] == 0
            sent = [cameras.sent_at[i][seq] for seq in seqs]
            assert sent[0] < away[0] and sent[-1] > away[1], (name, away, sent[0], sent[-1])
            rate = read_rate(mine, seqs, cameras.sent_at[i], away)
            print(f"{name}: {rate:.2f} fps read over camera 2's {away[1] - away[0]:.2f} s away")
            assert rate >= 0.9 * cameras.fps, (name, rate, away)
    assert report["frames"]["read"] == 4 * frames and report["realtime"]["verdict"] in ("real-time", "not real-time")


@pytest.mark.timeout(300)
def test_a_stalled_camera_is_detected_and_reconnected_within_the_stated_time(tmp_path):
    with LoopbackCameras(2) as cameras:

        def stall(start):  # once both streams are going: a stall during start-up has no gap to measure
            log = tmp_path / "stall.jsonl"
            while time.monotonic() < start + 120 and (
                    not log.exists() or len({json.loads(line)["stream"] for line in log.read_text().splitlines()
                                             if line.endswith("}")}) < 2):
                time.sleep(0.05)
            time.sleep(1.0)
            cameras.stall(1, 60.0)

        result, report, logged = run_streams(cameras, tmp_path, "stall", 360, during=stall)
    assert result.returncode == 0, result.stderr
    stalled = report["streams"][1]
    assert stalled["stalls"] == 1 and stalled["reconnects"] == 1, stalled
    times = [r["time_s"] for r in logged if r["stream"] == stalled["name"]]
    gap = max(b - a for a, b in zip(times, times[1:], strict=False))
    # Stall limit max(5 s, 10 frame periods) = 5 s, then a first backoff of 1 s ± 25 %, then a fresh connection.
    assert 4.5 <= gap <= 5.0 + 1.25 + 3.0, gap
    assert report["streams"][0]["stalls"] == 0


@pytest.mark.timeout(300)
def test_a_file_and_a_camera_together(cat_clip, tmp_path):
    with LoopbackCameras(1) as cameras:
        report_path, preds = tmp_path / "r.json", tmp_path / "p.jsonl"
        result = run_cli("--source", str(cat_clip), "--source", cameras.url(0), *MODEL, "--cache-dir",
                         str(tmp_path / "cache"), "--max-frames", "90", "--output", str(tmp_path / "{stream}.avi"),
                         "--predictions", str(preds), "--report", str(report_path), timeout=240)
    assert result.returncode == 0, result.stderr
    report = json.loads(report_path.read_text())
    clip, camera = report["streams"]
    assert clip["source"]["drop_policy"] == "block" and camera["source"]["drop_policy"] == "latest"
    assert clip["frames"]["written"] == clip["frames"]["processed"] == 24  # every frame of the file
    assert [r["frame"] for r in lines(preds) if r["stream"] == clip["name"]] == list(range(24))
    assert camera["frames"]["read"] == 90 == camera["frames"]["processed"] + camera["frames"]["dropped"]
    assert sum(camera["drops"].values()) == camera["frames"]["dropped"]


def test_several_streams_need_a_stream_placeholder_in_the_video_path(cat_clip, tmp_path):
    result = run_cli("--source", str(cat_clip), "--source", str(cat_clip), "--weights", "random",
                     "--output", str(tmp_path / "one.mp4"), timeout=60)
    assert result.returncode == 2 and "put {stream} in the path" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.timeout(300)
def test_ctrl_c_with_four_streams_leaves_every_output_playable_and_the_report_complete(tmp_path):
    with LoopbackCameras(4) as cameras:
        args = [a for i in range(4) for a in ("--source", cameras.url(i))]
        preds, report = tmp_path / "p.jsonl", tmp_path / "r.json"
        proc = start_cli(*args, *MODEL, "--cache-dir", str(tmp_path / "cache"), "--output",
                         str(tmp_path / "{stream}.mp4"), "--predictions", str(preds), "--report", str(report))
        wait_for_lines(proc, preds, 120)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    data = json.loads(report.read_text())
    assert data["status"] == "interrupted" and len(data["streams"]) == 4
    logged = lines(preds)
    for stream in data["streams"]:
        frames = read_all_frames(tmp_path / f"{stream['name']}.mp4")
        assert len(frames) == stream["frames"]["written"] == sum(r["stream"] == stream["name"] for r in logged) > 0
    assert data["frames"]["written"] == len(logged)


@pytest.mark.timeout(900)
def test_soak_four_streams_memory_stays_flat(tmp_path):
    """A few minutes of four live streams: RSS after the first minute grows by at most 5 %.

    The model's ONNX export is made first, in a run of its own, as a long-running deployment has it: the
    one-off export imports torch (about 700 MB of the process) and is not what a soak is about."""
    with LoopbackCameras(4) as cameras:
        args = [a for i in range(4) for a in ("--source", cameras.url(i))]
        warm = run_cli(*args[:2], *MODEL, "--cache-dir", str(tmp_path / "cache"), "--max-frames", "5", timeout=240)
        assert warm.returncode == 0, warm.stderr
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "run_stream.py"), *args, *MODEL, "--cache-dir", str(tmp_path / "cache"),
             "--max-frames", str(int(30 * 170)), "--predictions", str(tmp_path / "p.jsonl"),
             "--report", str(tmp_path / "r.json")],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        process, samples, started = psutil.Process(proc.pid), [], time.monotonic()
        while proc.poll() is None and time.monotonic() - started < 400:
            try:
                samples.append((time.monotonic() - started, process.memory_info().rss))
            except psutil.NoSuchProcess:
                break
            time.sleep(2.0)
        _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    after_first_minute = [rss for t, rss in samples if t >= 60]
    assert len(after_first_minute) > 30
    growth = max(after_first_minute) / after_first_minute[0] - 1
    print(f"RSS at 60 s {after_first_minute[0] / 2**20:.0f} MB, max after {max(after_first_minute) / 2**20:.0f} MB "
          f"({growth:+.1%}) over {samples[-1][0]:.0f} s")
    assert growth <= 0.05
    report = json.loads((tmp_path / "r.json").read_text())
    assert all(s["frames"]["read"] == 30 * 170 for s in report["streams"])
    assert os.path.getsize(tmp_path / "p.jsonl") > 0
