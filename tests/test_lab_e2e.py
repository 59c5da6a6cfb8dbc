"""`run_stream.py bench` and `eval` end to end, in subprocesses, on real photographs."""

import json
import os
import signal
import subprocess
import sys
import time

import cv2
import pytest

from stream.lab.runner import run_job
from stream.lab.worker import Job
from stream.media.sample import photo
from tests.conftest import ROOT, run_cli

pytestmark = pytest.mark.slow


def _png(path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_runs_each_combination_in_its_own_processes(cat_clip, tmp_path):
    out = tmp_path / "bench"
    result = run_cli("bench", "--models", "alexnet,no_such_net", "--weights", "random", "--backends",
                     "torch,onnxruntime", "--batch", "2", "--starts", "2", "--repeats", "3", "--warmup", "1",
                     "--frames", "4", "--inputs", str(cat_clip), "--pipeline-frames", "0", "--out", str(out),
                     timeout=600)
    assert result.returncode == 1, result.stderr  # some combinations failed, the rest were measured
    assert "2 of 4 combination(s) failed" in result.stderr and "Traceback" not in result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "completed" and report["environment"]["usable_cores"] >= 1
    rows = {(r["model"], r["backend"]): r for r in report["rows"]}
    for backend in ("torch", "onnxruntime"):
        bad = rows[("no_such_net", backend)]
        assert bad["status"] == "failed" and "unknown model 'no_such_net'" in bad["reason"]
    torch_row, ort_row = rows[("alexnet", "torch")], rows[("alexnet", "onnxruntime")]
    pids = torch_row["workers"] + ort_row["workers"]
    assert len(pids) == 4 and len(set(pids)) == 4  # a first and a warm start each, all separate processes
    # Each figure is its own process's: ONNX Runtime's warm start never loads torch, so it stays far below.
    assert ort_row["memory"]["peak_rss_mb"]["mean"] < torch_row["memory"]["peak_rss_mb"]["mean"]
    assert ort_row["first_start"]["cache"] == "miss" and ort_row["first_start"]["build_s"] > 0
    assert ort_row["warm_start"]["cache"] == "hit" and torch_row["first_start"]["cache"] == "not used"
    assert ort_row["payback"]["against"] == torch_row["id"]
    for row in (torch_row, ort_row):
        lat = row["latency"]
        assert lat["batches"] == 3 and lat["batch"] == 2
        assert 0 < lat["min_ms"] <= lat["p50_ms"] <= lat["p95_ms"] <= lat["p99_ms"]
        assert row["realtime"]["measured"] == "model" and row["realtime"]["verdict"] in ("real-time", "not real-time")
    assert torch_row["fidelity"] == {"reference": True}
    fid = ort_row["fidelity"]
    assert fid["images"] == 4 and fid["weak_agreement"]
    assert fid["max_abs_logit_diff"] < 1e-4 * fid["logit_scale"] and fid["min_cosine"] > 0.9999
    md = (out / "report.md").read_text()
    assert "Random weights" in md and "unknown model 'no_such_net'" in md
    for chart in ("latency.png", "throughput.png", "memory.png"):
        assert _png(out / chart) and f"]({chart})" in md


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """Hand-labelled photographs; the expected counts below were worked out by hand from them."""
    root = tmp_path_factory.mktemp("labelled")
    images = {"chelsea": photo("chelsea"), "coffee": photo("coffee"), "rocket": photo("rocket")}
    layout = [("Egyptian cat", "chelsea"),  # lite0's top-1 for this cat: right at top-1 and top-5
              ("n02123045", "chelsea"),     # tabby's WordNet id: second in lite0's top-5
              ("espresso", "coffee"),       # right
              ("tabby", "coffee"),          # a wrong label: no cat in a coffee cup's top-5
              ("espresso", "rocket"),       # wrong
              ("unicorn", "chelsea"),       # no such class: reported, not scored
              ("CARDIGAN", "coffee")]       # the corgi "Cardigan" or the sweater "cardigan": reported, not scored
    for i, (label, name) in enumerate(layout):
        (root / label).mkdir(exist_ok=True)
        cv2.imwrite(str(root / label / f"{i}-{name}.png"), images[name])
    (root / "espresso" / "broken.jpg").write_bytes(b"not an image")
    return root


def test_eval_counts_match_the_hand_count(labelled, tmp_path):
    out = tmp_path / "eval"
    result = run_cli("eval", "--data", str(labelled), "--models", "efficientnet_lite0",
                     "--backends", "torch,onnxruntime", "--batch", "4", "--out", str(out), timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["data"]["images"] == 8
    for row in report["rows"]:
        assert row["status"] == "ok" and not row["random_weights"]
        acc = row["accuracy"]
        assert (acc["images"], acc["top1"], acc["top5"]) == (5, 2, 3), row["backend"]
        assert acc["per_class"]["Egyptian cat"]["top1"] == 1  # the cat photo is counted right
        tabby = acc["per_class"]["n02123045"]
        assert (tabby["class"], tabby["top1"], tabby["top5"]) == ("tabby", 0, 1)
        wrong = {w["path"].split("/")[-1]: w for w in acc["wrong"]}
        assert set(wrong) == {"1-chelsea.png", "3-coffee.png", "4-rocket.png"}
        assert wrong["1-chelsea.png"]["in_top5"] and not wrong["3-coffee.png"]["in_top5"]
        assert row["unknown_labels"] == {"unicorn": 1} and row["ambiguous_labels"] == {"CARDIGAN": 1}
        assert len(row["unreadable_images"]) == 1 and "broken.jpg" in row["unreadable_images"][0]
        assert row["latency"]["mean_ms"] > 0 and row["latency"]["batches"] >= 30
    md = (out / "report.md").read_text()
    assert "2/5 (40.0%)" in md and "3/5 (60.0%)" in md and "unicorn" in md and "use its WordNet id" in md
    assert _png(out / "accuracy.png")


@pytest.mark.parametrize("args,fragment", [
    (["bench", "--batch", "0"], "must be from 1 to"),
    (["bench", "--backends", "torch,tpu"], "'tpu' is not one of"),
    (["bench", "--starts", "1"], "--starts must be at least 2"),
    (["bench", "--inputs", "/no/such.mp4"], "--inputs /no/such.mp4: no such file"),
    (["bench", "--out", "/proc/no/bench"], "--out /proc/no/bench: cannot write"),
    (["bench", "--weights", "/no/w.pth"], "file /no/w.pth not found"),
    (["eval", "--data", "/no/set"], "--data /no/set: not a folder"),
    (["eval", "--labels", "/no/l.csv"], "--labels /no/l.csv: cannot read"),
    (["eval", "--batch", "2,4"], "eval takes one --batch"),
])
def test_bad_input_is_one_line(args, fragment, tmp_path):
    if "--out" not in args:
        args = [*args, "--out", str(tmp_path / "o")]
    result = run_cli(*args, timeout=120)
    assert result.returncode == 2, result.stderr
    assert fragment in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_worker_past_its_time_is_a_failed_row_not_a_hang(tmp_path):
    started = time.monotonic()
    r = run_job(Job(kind="bench", model="alexnet", weights="random", backend="torch", precision="auto", batch=1,
                    inputs="unused"), tmp_path, "slow", timeout=0.5)
    assert r["status"] == "failed" and r["reason"] == "timed out after 0.5 s"
    assert time.monotonic() - started < 30 and (tmp_path / "slow.log").is_file()


def test_interrupted_bench_keeps_its_report(cat_clip, tmp_path):
    out = tmp_path / "bench"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "run_stream.py"), "bench", "--models", "alexnet", "--weights", "random",
         "--backends", "onnxruntime", "--batch", "1,2,4", "--frames", "4", "--inputs", str(cat_clip),
         "--out", str(out)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (out / "report.json").is_file():
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "holds what was measured so far" in stderr
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "interrupted" and len(report["rows"]) == 3
    assert "Run interrupted" in (out / "report.md").read_text()
