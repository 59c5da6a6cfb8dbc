"""int8: calibrated on real frames, deterministic, cached by calibration, refused where it cannot run."""

from pathlib import Path

import numpy as np
import pytest

from models import ModelRequest
from stream.backends import BackendOptions
from stream.backends.onnxruntime_backend import OnnxRuntimeBackend
from stream.backends.quantize import Calibration, calibration_id
from stream.errors import UserError
from stream.media.sample import make_clip, photo
from stream.pipeline.preprocess import Preprocessor
from tests.conftest import run_cli

LITE0 = ModelRequest("efficientnet_lite0")
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")


@pytest.fixture(scope="module")
def calib_clip(tmp_path_factory) -> Path:
    """Real photographs panned and zoomed: what int8 calibrates on here."""
    return make_clip(tmp_path_factory.mktemp("calib") / "calib.mp4", images=("chelsea", "coffee", "rocket"),
                     width=480, height=320, frames_per_image=8)


@pytest.fixture(scope="module")
def other_clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("calib2") / "other.mp4", images=("astronaut",), width=480,
                     height=320, frames_per_image=8)


def int8(cache: Path, clip: Path, frames: int = 12, method: str = "minmax") -> OnnxRuntimeBackend:
    options = BackendOptions(device="cpu", precision="int8", cache_dir=str(cache),
                             calibration=Calibration(str(clip), frames, method))
    return OnnxRuntimeBackend(LITE0, options)


@pytest.fixture(scope="module")
def photos_batch():
    from models import load_model

    spec = load_model("efficientnet_lite0", "imagenet").preprocess
    return Preprocessor(spec)([photo(p) for p in PHOTOS])


def test_quantization_is_deterministic_same_key_identical_logits(tmp_path, calib_clip, photos_batch):
    first, second = int8(tmp_path / "a", calib_clip), int8(tmp_path / "b", calib_clip)
    assert first.load.cache == second.load.cache == "miss"
    assert first.load.build_s and first.load.build_s > 0  # export + quantization, reported apart
    assert Path(first.load.artifact).name == Path(second.load.artifact).name  # the same cache key
    assert np.array_equal(first.infer(photos_batch), second.infer(photos_batch))
    again = int8(tmp_path / "a", calib_clip)
    assert again.load.cache == "hit" and again.load.build_s is None


def test_int8_keeps_fp32_top1_on_real_photos(tmp_path, calib_clip, photos_batch):
    fp32 = OnnxRuntimeBackend(LITE0, BackendOptions(device="cpu", cache_dir=str(tmp_path)))
    q = int8(tmp_path, calib_clip)
    a, b = fp32.infer(photos_batch), q.infer(photos_batch)
    assert q.precision == "int8"
    probs = np.exp(a - a.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    ranked = np.sort(probs, 1)
    clear = ranked[:, -1] - ranked[:, -2] >= 0.1  # near-ties (tabby/Egyptian cat) may flip either way
    assert clear[1]  # the espresso is a clear call
    assert list(a.argmax(1)[clear]) == list(b.argmax(1)[clear])
    assert all(a[i].argmax() in np.argsort(-b[i])[:3] for i in range(len(a)))  # a flipped tie stays near the top
    assert not np.array_equal(a, b)  # it really is another model
    cats = fp32.model.categories
    assert cats[int(b[1].argmax())] == "espresso"


def test_changed_calibration_set_or_method_is_a_miss_with_its_reason(tmp_path, calib_clip, other_clip, capsys):
    int8(tmp_path, calib_clip)
    other = int8(tmp_path, other_clip)
    assert other.load.cache.startswith("miss (calibration settings changed: calibration ")
    method = int8(tmp_path, calib_clip, method="percentile")
    assert "method 'minmax' != 'percentile'" in method.load.cache or "method 'percentile'" in method.load.cache
    assert int8(tmp_path, calib_clip).load.cache == "hit"  # the first entry is still there
    assert calibration_id(str(calib_clip)) != calibration_id(str(other_clip))


def test_a_changed_calibration_file_changes_the_key(tmp_path, calib_clip):
    copy = tmp_path / "copy.mp4"
    copy.write_bytes(calib_clip.read_bytes())
    before = calibration_id(str(copy))
    assert before == calibration_id(str(calib_clip))  # content, not the path
    copy.write_bytes(calib_clip.read_bytes()[:-1000])
    assert calibration_id(str(copy)) != before


def test_calibration_without_frames_is_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no decodable frames"):
        int8(tmp_path, empty)
    with pytest.raises(UserError, match="no such file or folder"):
        int8(tmp_path, tmp_path / "missing.mp4")


def test_cli_int8_errors_are_one_line(tmp_path, calib_clip):
    for args, expected in ((["--backend", "torch", "--precision", "int8"], "onnxruntime, openvino, tensorrt"),
                           (["--backend", "onnxruntime", "--precision", "int8", "--calibration", str(tmp_path)],
                            "no decodable frames")):
        done = run_cli("--source", str(calib_clip), "--model", "efficientnet_lite0", *args, "--no-display",
                       "--cache-dir", str(tmp_path / "c"), "--max-frames", "4", timeout=300)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), done.stderr
        assert expected in lines[0]


def test_cli_int8_run_reports_quantization_as_build_time(tmp_path, calib_clip):
    report = tmp_path / "r.json"
    args = ["--source", str(calib_clip), "--model", "efficientnet_lite0", "--backend", "onnxruntime",
            "--precision", "int8", "--calibration", "source", "--calibration-frames", "8", "--no-display",
            "--cache-dir", str(tmp_path / "c"), "--report", str(report)]
    done = run_cli(*args, timeout=300)
    assert done.returncode == 0, done.stderr
    import json

    r = json.loads(report.read_text())
    assert r["load"]["cache"] == "miss" and r["load"]["build_s"] > 0
    assert r["frames"]["shown"] == 24
    warm = run_cli(*args, timeout=300)
    assert warm.returncode == 0, warm.stderr
    r = json.loads(report.read_text())
    assert r["load"]["cache"] == "hit" and r["load"]["build_s"] is None


def test_int8_file_runs_leave_a_core_to_decode_and_encode():
    from dataclasses import replace

    from stream.config import Config
    from stream.session.plan import model_threads

    cfg = replace(Config(), backend="onnxruntime", precision="int8")
    assert model_threads(cfg, 2, 8) == 1 and model_threads(cfg, 8, 4) == 7
    assert model_threads(cfg, 2, 1) is None  # batch 1: the model call is the serial path, every core shortens it
    assert model_threads(cfg, 1, 8) is None  # one core: nothing to leave
    assert model_threads(replace(cfg, precision="fp32"), 2, 8) is None  # fp32: the model is the bottleneck
    assert model_threads(replace(cfg, threads=2), 2, 8) == 2  # the user's choice wins
    assert model_threads(replace(cfg, threads=1), 2, 1) == 1
    assert model_threads(replace(cfg, backend="openvino"), 2, 8) == 1
    assert model_threads(replace(cfg, backend="openvino"), 2, 1) == 1  # its second thread costs more than it gives


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_a_cached_int8_model_starts_without_torch(tmp_path, calib_clip, backend):
    import subprocess
    import sys

    args = ["--source", str(calib_clip), "--model", "efficientnet_lite0", "--backend", backend, "--precision", "int8",
            "--calibration", str(calib_clip), "--calibration-frames", "8", "--cache-dir", str(tmp_path),
            "--no-display", "--no-dashboard", "--max-frames", "6"]
    assert run_cli(*args, timeout=300).returncode == 0  # the first start exports and quantizes (torch)
    code = ("import sys; from stream.cli import main; "
            f"rc = main({args!r}); print('TORCH_IMPORTED', 'torch' in sys.modules); sys.exit(rc)")
    root = Path(__file__).resolve().parents[1]
    warm = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert warm.returncode == 0, warm.stderr
    assert "TORCH_IMPORTED False" in warm.stdout and "cache hit" in warm.stdout
