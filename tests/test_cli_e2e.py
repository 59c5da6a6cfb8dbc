"""The whole tool as users run it, in a subprocess, on clips made from real photographs."""

import json
import signal
import subprocess
import time

import numpy as np
import pytest
import torch

from models import load_model
from stream.outputs.sinks import display_available  # noqa: F401 - import check: the CLI's own modules load
from tests.conftest import CAT_LABELS, read_all_frames, run_cli, start_cli, wait_for_lines
from tests.test_tensorrt import HAS_CUDA, HAVE_TRT

REPORT_KEYS = {
    "source": {"uri", "fps", "frames"},
    "model": {"name", "weights", "backend", "device", "precision", "batch"},
    "load": {"weights_s", "warmup_s", "first_frame_s"},
    "frames": {"read", "processed", "dropped", "written"},
    "fps": {"capture", "inference", "pipeline"},
    "latency_ms": {"preprocess", "inference", "postprocess", "render", "end_to_end"},
    "memory": {"peak_rss_mb", "device_peak_mb"},
    "realtime": {"target_fps", "verdict", "reason", "latency_judged", "budget_ms", "live_estimate_ms"},
}

pytestmark = pytest.mark.slow


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_lite0_labels_the_cat_and_keeps_every_frame(backend, cat_clip, tmp_path):
    out, preds, report = tmp_path / "out.mp4", tmp_path / "p.jsonl", tmp_path / "r.json"
    result = run_cli("--source", str(cat_clip), "--model", "efficientnet_lite0", "--output", str(out),
                     "--predictions", str(preds), "--report", str(report), "--batch", "4",
                     "--backend", backend, "--cache-dir", str(tmp_path / "cache"))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    n_in = len(read_all_frames(cat_clip))
    assert len(read_all_frames(out)) == n_in == 24
    records = lines(preds)
    assert [r["frame"] for r in records] == list(range(n_in))
    cats = sum(r["top5"][0]["label"] in CAT_LABELS for r in records)
    assert cats >= 0.8 * n_in, [r["top5"][0]["label"] for r in records]
    data = json.loads(report.read_text())
    for key, sub in REPORT_KEYS.items():
        assert sub <= set(data[key]), key
    for stage in REPORT_KEYS["latency_ms"]:
        assert {"mean", "p50", "p95", "p99", "max"} <= set(data["latency_ms"][stage])
    assert data["frames"] == {"read": 24, "processed": 24, "dropped": 0, "written": 24, "shown": 24,
                              "stale_at_start": 0}
    assert data["model"]["name"] == "efficientnet_lite0" and data["model"]["batch"] == 4
    assert data["model"]["backend"] == backend
    # A cold cache: ONNX Runtime exports once (timed apart from the load); PyTorch caches nothing.
    assert (data["load"]["cache"], data["load"]["build_s"] is not None) == \
        (("miss", True) if backend == "onnxruntime" else ("not used", False))
    assert data["load"]["first_frame_s"] > data["load"]["weights_s"] > 0
    assert data["realtime"]["verdict"] in {"real-time", "not real-time", "undecided"}
    assert "verdict" in result.stdout and "Egyptian cat" not in result.stderr


def test_predictions_line_up_with_direct_frame_by_frame_classification(alternating_clip, tmp_path):
    preds = tmp_path / "p.jsonl"
    result = run_cli("--source", str(alternating_clip), "--model", "efficientnet_lite0",
                     "--predictions", str(preds), "--batch", "3")
    assert result.returncode == 0, result.stderr
    logged = [r["top5"][0]["index"] for r in lines(preds)]

    # Independent reference: torchvision's own transform on each decoded frame, one at a time.
    model = load_model("efficientnet_lite0", "imagenet")
    from torchvision.models import get_model_weights

    transform = get_model_weights("efficientnet_b0").DEFAULT.transforms(antialias=True)
    transform.resize_size, transform.crop_size = [256], [224]
    direct = []
    with torch.inference_mode():
        for bgr in read_all_frames(alternating_clip):
            x = transform(torch.from_numpy(np.ascontiguousarray(bgr[:, :, ::-1])).permute(2, 0, 1))
            direct.append(int(model.module(x[None]).argmax()))
    assert len(logged) == len(direct) == 24
    assert len(set(direct[:3])) == 3  # consecutive frames really differ, so a shift would show
    agree = sum(a == b for a, b in zip(logged, direct, strict=True))
    assert agree >= 22, list(zip(logged, direct, strict=True))
    shifted = sum(a == b for a, b in zip(logged[1:], direct, strict=False))
    assert shifted < agree / 2


def test_random_alexnet_runs_flags_its_weights_and_honours_max_frames(cat_clip, tmp_path):
    report = tmp_path / "r.json"
    result = run_cli("--source", str(cat_clip), "--weights", "random", "--max-frames", "10",
                     "--report", str(report))
    assert result.returncode == 0, result.stderr
    data = json.loads(report.read_text())
    assert data["model"]["name"] == "alexnet" and data["model"]["random_weights"] is True
    assert data["frames"]["processed"] == 10
    assert "RANDOM WEIGHTS" in result.stdout


def test_config_file_with_flag_override(cat_clip, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'source = "{cat_clip}"\nweights = "random"\nbatch = 2\nmax_frames = 6\n')
    report = tmp_path / "r.json"
    result = run_cli("--config", str(cfg), "--batch", "3", "--report", str(report))
    assert result.returncode == 0, result.stderr
    data = json.loads(report.read_text())
    assert data["model"]["batch"] == 3 and data["frames"]["processed"] == 6


def test_local_weights_file(cat_clip, tmp_path):
    import torchvision

    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    report = tmp_path / "r.json"
    result = run_cli("--source", str(cat_clip), "--model", "resnet18", "--weights", str(weights),
                     "--max-frames", "4", "--report", str(report))
    assert result.returncode == 0, result.stderr
    assert json.loads(report.read_text())["model"]["weights"] == str(weights)


def test_truncated_video_processes_what_decodes_and_says_so(long_avi, tmp_path):
    broken = tmp_path / "broken.avi"
    data = long_avi.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    out, report = tmp_path / "out.avi", tmp_path / "r.json"
    result = run_cli("--source", str(broken), "--weights", "random", "--output", str(out), "--report", str(report))
    assert result.returncode == 4
    assert_one_line_error(result, "truncated or corrupt")
    written = json.loads(report.read_text())["frames"]["written"]
    assert 0 < written < 90
    assert len(read_all_frames(out)) == written


def test_an_edit_listed_mp4_one_frame_short_of_its_count_is_not_truncated(edit_listed_mp4, tmp_path):
    out, report = tmp_path / "out.mp4", tmp_path / "r.json"
    result = run_cli("--source", str(edit_listed_mp4), "--weights", "random", "--output", str(out),
                     "--report", str(report))
    assert result.returncode == 0, result.stderr
    r = json.loads(report.read_text())
    assert r["source"]["frames"] == 456  # what the container announces
    assert r["status"] == "completed" and r["frames"]["written"] == r["frames"]["read"] == 455
    assert not any("decoded" in w for w in r["warnings"])
    assert len(read_all_frames(out)) == 455


@pytest.mark.parametrize("fixture", ["cut_mp4", "corrupt_avi"])
def test_cut_and_corrupt_h264_files_are_reported_as_truncated(fixture, request, tmp_path):
    broken = request.getfixturevalue(fixture)
    out, report = tmp_path / "out.avi", tmp_path / "r.json"
    result = run_cli("--source", str(broken), "--weights", "random", "--output", str(out), "--report", str(report))
    assert result.returncode == 4, result.stderr
    assert_one_line_error(result, "truncated or corrupt")
    r = json.loads(report.read_text())
    assert r["status"] == "incomplete input"
    assert 0 < r["frames"]["written"] == r["frames"]["read"] < r["source"]["frames"]
    assert len(read_all_frames(out)) == r["frames"]["written"]


def assert_one_line_error(result, fragment: str):
    err = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(err) == 1, result.stderr
    assert fragment in err[0], err[0]
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--source", "/nonexistent/clip.mp4"], "no such file"),
        (["--source", "{text}"], "not a video"),
        (["--source", "{mp4_truncated}"], "not a video"),
        (["--source", "7"], "camera 7 is not available"),
        (["--source", "rtsp://127.0.0.1:9/stream"], "cannot open stream"),
        (["--source", "http://127.0.0.1:9/video.mjpg"], "cannot open stream"),
        (["--source", "{clip}", "--output", "/nonexistent/dir/out.mp4"], "does not exist"),
        (["--source", "{clip}", "--report", "/proc/nope.json"], "cannot be written"),
        (["--source", "{clip}", "--model", "alexnett", "--weights", "random"], "unknown model 'alexnett'"),
        (["--source", "{clip}", "--precision", "fp16", "--device", "cpu"], "fp16 needs a CUDA GPU"),
        pytest.param(["--source", "{clip}", "--trt"], "--trt needs",
                     marks=pytest.mark.skipif(HAVE_TRT, reason="TensorRT and a GPU are present here")),
        (["--source", "{clip}", "--backend", "onnxruntime", "--threads", "0"], "threads"),
        (["--source", "{clip}", "--backend", "onnxruntime", "--weights", "random", "--cache-dir", "/proc/nope"],
         "cannot write to the cache"),
        (["--source", "{clip}", "--backend", "onnxruntime", "--weights", "{missing}"], "not found"),
        (["--source", "{clip}", "--batch", "0"], "batch"),
        (["--source", "{clip}", "--batch", "four"], "invalid int value"),
        (["--config", "{bad_config}"], "drop-policy"),
        (["--source", "{clip}", "--weights", "{text}"], "not a loadable PyTorch state_dict"),
        pytest.param(["--source", "{clip}", "--device", "cuda", "--weights", "random"], "no CUDA GPU",
                     marks=pytest.mark.skipif(HAS_CUDA, reason="this machine has a CUDA GPU")),
        (["--source", "{clip}", "--max-frames", "2"], "offline options: --weights PATH"),
        (["--source", "{clip}", "--display", "--weights", "random"], "no usable display"),
    ],
)
def test_bad_input_gives_one_line_and_nonzero_exit(args, fragment, cat_clip, tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 100)
    mp4_truncated = tmp_path / "cut.mp4"
    mp4_truncated.write_bytes(cat_clip.read_bytes()[:5000])
    bad_config = tmp_path / "bad.toml"
    bad_config.write_text('drop_policy = "sometimes"\n')
    subst = {"{missing}": str(tmp_path / "missing.pth"),
             "{text}": str(text), "{mp4_truncated}": str(mp4_truncated), "{clip}": str(cat_clip),
             "{bad_config}": str(bad_config)}
    started = time.monotonic()
    # Downloads go through a proxy that refuses at once: the offline case, hermetic and fast.
    no_network = {"https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
                  "TORCH_HOME": str(tmp_path / "torch"), "DISPLAY": ":99"}  # an X server that is not there
    result = run_cli(*[subst.get(a, a) for a in args], timeout=60, env_extra=no_network)
    assert result.returncode != 0
    assert_one_line_error(result, fragment)
    assert time.monotonic() - started < 60


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_leaves_playable_video_flushed_log_and_report(sig, code, cat_clip, tmp_path):
    out, preds, report = tmp_path / "out.mp4", tmp_path / "p.jsonl", tmp_path / "r.json"
    proc = start_cli("--source", str(cat_clip), "--loop", "--weights", "random", "--output", str(out),
                     "--predictions", str(preds), "--report", str(report), "--no-display")
    wait_for_lines(proc, preds, 30)
    proc.send_signal(sig)
    try:
        stdout, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)  # run_stream.py dumps every thread's stack
        time.sleep(1)
        proc.kill()
        stdout, stderr = proc.communicate()
        pytest.fail(f"no exit 60 s after {sig!r}; stdout tail:\n{stdout[-2000:]}\nstacks:\n{stderr[-6000:]}")
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    data = json.loads(report.read_text())
    assert data["status"] == "interrupted"
    logged = lines(preds)
    assert len(logged) >= 30
    assert [r["frame"] for r in logged] == list(range(len(logged)))  # --loop keeps counting past the end
    assert data["frames"]["written"] == len(logged) == len(read_all_frames(out))


def test_live_stream_that_drops_keeps_what_was_processed_and_exits_nonzero(mjpeg_stream, tmp_path):
    out, preds, report = tmp_path / "out.avi", tmp_path / "p.jsonl", tmp_path / "r.json"
    result = run_cli("--source", mjpeg_stream, "--weights", "random", "--output", str(out),
                     "--predictions", str(preds), "--report", str(report), timeout=120)
    assert result.returncode == 3
    assert_one_line_error(result, "lost url")
    data = json.loads(report.read_text())
    assert data["source"]["live"] is True and data["source"]["drop_policy"] == "latest"
    assert data["status"] == "error"
    logged = lines(preds)
    frames = data["frames"]
    # Frames buffered while the model loaded are skipped as stale, never shown as live.
    assert frames["stale_at_start"] > 0
    assert frames["read"] + frames["stale_at_start"] == 60
    assert frames["read"] == frames["processed"] + frames["dropped"]
    assert frames["written"] == len(logged) == frames["processed"] == len(read_all_frames(out))
    indices = [r["frame"] for r in logged]
    assert indices == sorted(set(indices))  # dropped frames leave gaps, never repeats


def test_image_folder_is_one_frame_per_image_with_real_labels(tmp_path):
    import cv2

    from stream.media.sample import photo

    folder = tmp_path / "photos"
    folder.mkdir()
    for i, name in enumerate(["chelsea", "coffee", "rocket"]):
        cv2.imwrite(str(folder / f"{i}_{name}.jpg"), photo(name))
    out, preds = tmp_path / "out.avi", tmp_path / "p.jsonl"
    result = run_cli("--source", str(folder), "--model", "efficientnet_lite0", "--output", str(out),
                     "--predictions", str(preds))
    assert result.returncode == 0, result.stderr
    top1 = [r["top5"][0]["label"] for r in lines(preds)]
    assert top1[0] in CAT_LABELS
    assert top1[1] == "espresso"
    assert top1[2] in {"missile", "projectile"}
    assert len(read_all_frames(out)) == 3
