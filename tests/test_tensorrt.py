"""TensorRT backend. On CPU: what `--trt` says when TensorRT or the GPU is missing. Marked `gpu`:
parity with PyTorch in fp32 and fp16, the engine cache (hit, miss, mismatch, corrupt) and the whole
pipeline with --trt; they skip with a reason where there is no CUDA GPU and TensorRT."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from stream.backends.tensorrt_backend import missing_requirements, unavailable_message
from tests.conftest import run_cli


def gpu_and_tensorrt() -> bool:
    if importlib.util.find_spec("tensorrt") is None:
        return False
    import torch

    return torch.cuda.is_available()


HAVE_TRT = gpu_and_tensorrt()
needs_trt = pytest.mark.skipif(not HAVE_TRT, reason="needs a CUDA GPU and the tensorrt package "
                                                   "(pip install -r requirements-gpu.txt)")


@pytest.mark.parametrize("has_trt, gpus, t2t, expect, absent", [
    (False, 0, None, ["tensorrt Python package", "CUDA GPU"], ["torch2trt"]),
    (True, 0, None, ["CUDA GPU"], ["tensorrt Python package"]),
    (False, 1, None, ["tensorrt Python package"], ["CUDA GPU"]),
    (True, 1, False, ["torch2trt"], ["tensorrt Python package", "CUDA GPU"]),
])
def test_the_message_names_exactly_what_is_missing_and_the_ways_out(has_trt, gpus, t2t, expect, absent):
    message = unavailable_message(missing_requirements(has_trt, gpus, t2t))
    for text in expect:
        assert text in message
    for text in absent:
        assert text not in message
    assert "requirements-gpu.txt" in message and "--backend onnxruntime" in message
    assert "\n" not in message
    assert missing_requirements(True, 1, True) == [] and missing_requirements(True, 1) == []


@pytest.mark.skipif(HAVE_TRT, reason="this machine has TensorRT and a GPU")
@pytest.mark.parametrize("flags", [["--trt"], ["--backend", "tensorrt", "--trt-converter", "torch2trt"]])
def test_trt_without_gpu_or_tensorrt_is_one_line_and_exit_2(tmp_path, flags):
    run = run_cli(*flags, "--weights", "random", "--report", str(tmp_path / "r.json"), timeout=60)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --trt needs")
    assert "requirements-gpu.txt" in lines[0] and "--backend onnxruntime" in lines[0]
    assert "loading" not in run.stdout  # it failed before any model was loaded


# ---------------------------------------------------------------- on a GPU with TensorRT


@pytest.fixture(scope="module")
def trt_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("trt-cache"))


def _reference(name: str, weights: str):
    import torch

    from models import load_model
    from stream.preprocess import Preprocessor
    from stream.sample import photo

    model = load_model(name, weights)
    batch = Preprocessor(model.preprocess)([photo(p) for p in ("chelsea", "coffee", "astronaut", "rocket")])
    with torch.inference_mode():
        return model, batch, model.module(torch.from_numpy(batch)).numpy()


def _backend(cache_dir, precision, batch=4, name="efficientnet_lite0", weights="imagenet"):
    from models import ModelRequest
    from stream.backends import BackendOptions
    from stream.backends.tensorrt_backend import TensorRTBackend

    return TensorRTBackend(ModelRequest(name, weights),
                           BackendOptions(device="cuda", precision=precision, max_batch=batch, cache_dir=cache_dir))


@pytest.mark.gpu
@needs_trt
@pytest.mark.parametrize("precision, tolerance", [("fp32", 1e-2), ("fp16", 0.15)])
def test_tensorrt_logits_and_top5_against_pytorch(trt_cache, precision, tolerance):
    from stream.postprocess import top_k

    model, batch, expected = _reference("efficientnet_lite0", "imagenet")
    backend = _backend(trt_cache, precision)
    got = backend.infer(batch)
    diff = np.abs(got - expected).max()
    print(f"TensorRT {precision} vs PyTorch fp32: max |logit diff| {diff:.5f}")
    assert diff < tolerance
    ours, theirs = top_k(got, model.categories, 5), top_k(expected, model.categories, 5)
    assert [row[0].index for row in ours] == [row[0].index for row in theirs]  # top-1 agrees on every photo
    overlap = np.mean([len({t.index for t in a} & {t.index for t in b}) / 5 for a, b in zip(ours, theirs, strict=True)])
    assert overlap >= 0.8
    assert backend.cuda_peak_mb() > 0


@pytest.mark.gpu
@needs_trt
def test_tensorrt_gpu_preprocessing_feeds_the_same_pixels(trt_cache):
    from stream.preprocess import Preprocessor, make_preprocessor
    from stream.sample import photo

    backend = _backend(trt_cache, "fp32")
    images = [photo("chelsea"), photo("coffee")]
    on_gpu = make_preprocessor(backend.model.preprocess, backend.input_device)(images)
    assert on_gpu.is_cuda
    host = Preprocessor(backend.model.preprocess)(images)
    assert np.abs(on_gpu.cpu().numpy() - host).mean() < 0.02
    assert np.abs(backend.infer(on_gpu) - backend.infer(host)).max() < 0.05


@pytest.mark.gpu
@needs_trt
def test_engine_cache_hit_miss_mismatch_and_corrupt(tmp_path, capsys):
    first = _backend(str(tmp_path), "fp16", batch=2, name="alexnet", weights="random")
    assert first.load.cache == "miss" and first.load.build_s > 0
    assert "once per model, GPU and TensorRT version" in capsys.readouterr().out
    second = _backend(str(tmp_path), "fp16", batch=2, name="alexnet", weights="random")
    assert second.load.cache == "hit" and second.load.build_s is None
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    assert np.array_equal(first.infer(x), second.infer(x))
    engine = Path(second.load.artifact)
    sidecar = Path(str(engine) + ".json")
    record = json.loads(sidecar.read_text())
    record["fields"]["tensorrt"] = "0.0.1"  # built by another TensorRT
    sidecar.write_text(json.dumps(record))
    mismatched = _backend(str(tmp_path), "fp16", batch=2, name="alexnet", weights="random")
    assert mismatched.load.cache.startswith("rebuilt (it was built for different settings")
    engine.write_bytes(engine.read_bytes()[:1000])  # truncated
    corrupt = _backend(str(tmp_path), "fp16", batch=2, name="alexnet", weights="random")
    assert "checksum" in corrupt.load.cache
    assert np.allclose(corrupt.infer(x), first.infer(x), atol=1e-3)


@pytest.mark.gpu
@needs_trt
def test_pipeline_end_to_end_with_trt(cat_clip, tmp_path, trt_cache):
    report = tmp_path / "r.json"
    run = run_cli("--source", str(cat_clip), "--trt", "--model", "efficientnet_lite0", "--batch", "4",
                  "--cache-dir", trt_cache, "--output", str(tmp_path / "o.mp4"), "--report", str(report),
                  timeout=600)
    assert run.returncode == 0, run.stderr
    data = json.loads(report.read_text())
    assert data["model"]["backend"] == "tensorrt" and data["model"]["precision"] == "fp16"
    assert data["frames"]["written"] == data["frames"]["read"] > 0
    assert data["load"]["build_s"] is None or data["load"]["build_s"] > 0
    print("TRT pipeline:", json.dumps({k: data[k] for k in ("fps", "load", "memory")}))
