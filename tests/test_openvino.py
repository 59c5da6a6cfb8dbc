"""OpenVINO backend: parity with ONNX Runtime fp32 on real photographs, frame order under the THROUGHPUT
hint, its compiled-model cache, and its row in `bench`."""

import json

import numpy as np
import pytest

from models import ModelRequest
from stream.backends import BackendOptions
from stream.backends.onnxruntime_backend import OnnxRuntimeBackend
from stream.backends.openvino_backend import OpenVinoBackend, choose_hint, split
from stream.errors import UserError
from stream.media.sample import photo
from stream.pipeline.postprocess import top_k
from stream.pipeline.preprocess import Preprocessor
from tests.conftest import run_cli

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "camera")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("ov-artifacts"))


def batch_of(backend) -> np.ndarray:
    return Preprocessor(backend.model.preprocess)([photo(p) for p in PHOTOS])


def test_lite0_matches_onnxruntime_fp32_top5_identical(cache_dir):
    request = ModelRequest("efficientnet_lite0")
    ort = OnnxRuntimeBackend(request, BackendOptions(device="cpu", cache_dir=cache_dir))
    ov = OpenVinoBackend(request, BackendOptions(device="cpu", cache_dir=cache_dir, hint="latency"))
    batch = batch_of(ort)
    a, b = ort.infer(batch), ov.infer(batch)
    scale = np.abs(a).max()
    assert np.abs(a - b).max() <= 1e-3 * scale, (np.abs(a - b).max(), scale)
    cats = ort.model.categories
    assert [[t.index for t in r] for r in top_k(a, cats, 5)] == [[t.index for t in r] for r in top_k(b, cats, 5)]
    assert ov.model.categories == cats and ov.precision == "fp32" and ov.hint == "latency"


def test_alexnet_random_logits_match_onnxruntime(cache_dir):
    request = ModelRequest("alexnet", "random")
    ort = OnnxRuntimeBackend(request, BackendOptions(device="cpu", cache_dir=cache_dir))
    ov = OpenVinoBackend(request, BackendOptions(device="cpu", cache_dir=cache_dir, max_batch=4))
    batch = batch_of(ort)
    a, b = ort.infer(batch), ov.infer(batch)
    # Random weights: near-uniform probabilities, so logits are compared, relative to their scale.
    assert np.abs(a - b).max() <= 1e-4 * np.abs(a).max()


def test_throughput_chunks_come_back_in_frame_order(cache_dir):
    request = ModelRequest("efficientnet_lite0")
    tp = OpenVinoBackend(request, BackendOptions(device="cpu", cache_dir=cache_dir, max_batch=8, hint="throughput"))
    assert tp.hint == "throughput"
    batch = batch_of(tp)
    together = tp.infer(batch)
    one_by_one = np.concatenate([tp.infer(batch[i:i + 1]) for i in range(len(batch))])
    assert together.shape == (len(PHOTOS), 1000)
    assert np.abs(together - one_by_one).max() <= 1e-4 * np.abs(one_by_one).max()
    assert len({int(i) for i in together.argmax(1)}) == len(PHOTOS)  # five photos, five different classes


def test_split_and_hint_choice():
    assert split(8, 2) == [(0, 4), (4, 8)]
    assert split(5, 2) == [(0, 2), (2, 5)] or split(5, 2) == [(0, 3), (3, 5)]
    assert split(1, 4) == [(0, 1)]
    assert sum(b - a for a, b in split(7, 3)) == 7
    assert choose_hint("auto", 1) == "latency" and choose_hint("auto", 8) == "throughput"
    assert choose_hint("latency", 8) == "latency"
    with pytest.raises(UserError):
        choose_hint("fast", 1)


def test_compiled_model_is_cached_and_a_corrupt_blob_is_compiled_again(tmp_path, capsys):
    request, options = ModelRequest("efficientnet_lite0"), BackendOptions(device="cpu", cache_dir=str(tmp_path))
    first = OpenVinoBackend(request, options)
    assert first.load.cache == "miss" and first.load.build_s > 0
    second = OpenVinoBackend(request, options)
    assert second.load.cache == "hit" and second.load.build_s is None
    blob = tmp_path / "openvino" / first.load.artifact.split("/")[-1]
    blob.write_bytes(b"not a model" + blob.read_bytes()[11:])
    third = OpenVinoBackend(request, options)
    assert third.load.cache.startswith("rebuilt (") and "checksum" in third.load.cache
    assert "compiling it again" in capsys.readouterr().out
    batch = batch_of(third)
    assert np.array_equal(third.infer(batch), second.infer(batch))
    other = OpenVinoBackend(request, BackendOptions(device="cpu", cache_dir=str(tmp_path), threads=1))
    assert other.load.cache == "miss"  # the thread count is part of what was compiled


def test_fp16_and_cuda_are_one_line_errors(tmp_path):
    request = ModelRequest("efficientnet_lite0")
    with pytest.raises(UserError, match="fp32 or int8"):
        OpenVinoBackend(request, BackendOptions(precision="fp16", cache_dir=str(tmp_path)))
    with pytest.raises(UserError, match="runs on the CPU"):
        OpenVinoBackend(request, BackendOptions(device="cuda", cache_dir=str(tmp_path)))


def test_openvino_int8_row_in_bench(tmp_path):
    out = tmp_path / "bench"
    done = run_cli("bench", "--models", "efficientnet_lite0:imagenet", "--backends", "onnxruntime,openvino",
                   "--precision", "fp32,int8", "--batch", "2", "--starts", "2", "--repeats", "3", "--warmup", "1",
                   "--frames", "4", "--calibration-frames", "8", "--pipeline-frames", "0", "--out", str(out),
                   timeout=900)
    assert done.returncode == 0, done.stderr
    rows = json.loads((out / "report.json").read_text())["rows"]
    got = {(r["backend"], r["precision"]) for r in rows if r["status"] == "ok"}
    assert got == {("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32"), ("openvino", "int8")}
    md = (out / "report.md").read_text()
    assert "openvino" in md and "int8" in md
    int8_rows = [r for r in rows if r["precision"] == "int8"]
    assert all(r["fidelity"] and "max_abs_logit_diff" in json.dumps(r["fidelity"]) for r in int8_rows), int8_rows


@pytest.mark.timeout(120)
def test_closing_after_parallel_chunks_never_hangs(cache_dir):
    # OpenVINO's Python completion callbacks once deadlocked the compiled model's destructor about one
    # close in ten; twelve rounds of load, parallel chunks and close must all finish.
    request = ModelRequest("efficientnet_lite0")
    batch = np.zeros((4, 3, 224, 224), np.float32)
    for _ in range(12):
        backend = OpenVinoBackend(request, BackendOptions(device="cpu", cache_dir=cache_dir, max_batch=4,
                                                          hint="throughput"))
        backend.infer(batch)
        backend.close()
