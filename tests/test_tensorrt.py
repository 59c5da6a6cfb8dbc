"""TensorRT backend. On CPU: what `--trt` says when TensorRT or the GPU is missing. Marked `gpu`:
parity with PyTorch in fp32 and fp16, the engine cache (hit, miss, mismatch, corrupt) and the whole
pipeline with --trt; they skip with a reason where there is no CUDA GPU and TensorRT."""

import importlib.util
import json
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from stream.backends.tensorrt_backend import missing_requirements, unavailable_message
from stream.errors import UserError
from tests.conftest import CAT_LABELS, run_cli


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


HAS_CUDA = cuda_available()
HAVE_TRT = HAS_CUDA and importlib.util.find_spec("tensorrt") is not None
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


# ------------------------------------------- build paths against stand-ins for tensorrt and torch2trt


class FakeTensorRT:
    """Just enough of tensorrt's Python API for the build paths, recording what the builder was told."""

    def __init__(self, version: str = "10.13.0") -> None:
        self.__version__ = version
        self.cleared, self.calls = [], []
        fake = self

        class Config:
            progress_monitor = None

            def set_memory_pool_limit(self, pool, size):
                fake.calls.append(("pool", size))

            def clear_flag(self, flag):
                fake.cleared.append(flag)

            def add_optimization_profile(self, profile):
                fake.calls.append(("profile", profile.shapes))

        class Profile:
            def set_shape(self, name, lo, opt, hi):
                self.shapes = (name, lo, opt, hi)

        class Network:
            def get_input(self, i):
                return SimpleNamespace(name="input")

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                fake.calls.append(("network flags", flags))
                return Network()

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                return b"plan"

        class OnnxParser:
            def __init__(self, network, logger):
                pass

            def parse_from_file(self, path):
                return True

        self.Builder, self.OnnxParser = Builder, OnnxParser
        self.NetworkDefinitionCreationFlag = SimpleNamespace(STRONGLY_TYPED=1)
        self.MemoryPoolType = SimpleNamespace(WORKSPACE="workspace")
        self.BuilderFlag = SimpleNamespace(TF32="TF32")


@pytest.mark.parametrize("precision, tf32_cleared", [("fp32", True), ("fp16", False)])
def test_an_fp32_engine_is_built_without_tf32(precision, tf32_cleared):
    from stream.backends.progress import BuildProgress
    from stream.backends.tensorrt_build import allows_tf32, build_onnx

    trt = FakeTensorRT()
    plan = build_onnx(trt, None, Path("m.onnx"), (3, 224, 224), 4, precision, "alexnet", BuildProgress.__new__(
        BuildProgress))
    assert plan == b"plan"
    assert (trt.cleared == ["TF32"]) is tf32_cleared and allows_tf32(precision) is not tf32_cleared
    assert ("network flags", 1 << 1) in trt.calls  # strongly typed
    assert ("profile", ("input", (1, 3, 224, 224), (4, 3, 224, 224), (4, 3, 224, 224))) in trt.calls


def test_the_engine_cache_key_names_the_tf32_choice():
    from models import ModelRequest
    from stream.backends.tensorrt_backend import TensorRTBackend

    props = SimpleNamespace(name="Fake GPU", major=9, minor=0)
    fake_torch = SimpleNamespace(cuda=SimpleNamespace(get_device_properties=lambda device: props),
                                 version=SimpleNamespace(cuda="13.0"))
    keys = {}
    for precision in ("fp32", "fp16"):
        owner = SimpleNamespace(_torch=fake_torch, _trt=FakeTensorRT(), precision=precision, device="cuda:0")
        keys[precision] = TensorRTBackend.engine_fields(owner, ModelRequest("alexnet", "random"), (3, 224, 224), 4,
                                                        "onnx")
    assert keys["fp32"]["tf32"] is False and keys["fp16"]["tf32"] is True


def test_torch2trt_is_refused_on_tensorrt_11_with_the_version_limit():
    from stream.backends.tensorrt_build import build_torch2trt
    from stream.errors import UserError

    with pytest.raises(UserError, match=r"TensorRT 10.x at most .* this is TensorRT 11.0.1; use the default"):
        build_torch2trt(FakeTensorRT("11.0.1"), None, "cuda:0", (3, 224, 224), 1, "fp16", "alexnet")


@pytest.mark.parametrize("module_source, fragment", [
    # What torch2trt does at import time on a TensorRT without the INT8 calibrator API.
    ("import tensorrt\nclass C(tensorrt.IInt8Calibrator): pass\n", "AttributeError"),
    ("def torch2trt(*args, **kwargs):\n    return type('M', (), {'engine': None})()\n", "returned no engine"),
    ("def torch2trt(*args, **kwargs):\n    raise RuntimeError('unsupported op aten::foo')\n", "aten::foo"),
])
def test_torch2trt_failures_are_one_line(module_source, fragment, tmp_path, monkeypatch):
    from stream.backends.tensorrt_build import build_torch2trt
    from stream.errors import UserError

    (tmp_path / "torch2trt.py").write_text(module_source)
    (tmp_path / "tensorrt.py").write_text("__version__ = '10.13.0'\n")  # no IInt8Calibrator, as in 11
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("torch2trt", "tensorrt"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    with pytest.raises(UserError) as caught:
        build_torch2trt(FakeTensorRT("10.13.0"), None, "cpu", (3, 8, 8), 1, "fp32", "alexnet")
    message = str(caught.value)
    assert fragment in message and "use the default --trt-converter onnx" in message and "\n" not in message


# ---------------------------------------------------------------- on a GPU with TensorRT


@pytest.fixture(scope="module")
def trt_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("trt-cache"))


def _reference(name: str, weights: str):
    import torch

    from models import load_model
    from stream.media.sample import photo
    from stream.pipeline.preprocess import Preprocessor

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
    from stream.pipeline.postprocess import top_k

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


@pytest.mark.gpu
@needs_trt
def test_tensorrt_gpu_preprocessing_feeds_the_same_pixels(trt_cache):
    from stream.media.sample import photo
    from stream.pipeline.preprocess import Preprocessor, make_preprocessor

    backend = _backend(trt_cache, "fp32")
    images = [photo("chelsea"), photo("coffee")]
    on_gpu = make_preprocessor(backend.model.preprocess, backend.input_device)(images)
    assert on_gpu.is_cuda
    # Finished when it returns (its time is the preprocess stage's, not the model's).
    assert __import__("torch").cuda.current_stream(on_gpu.device).query()
    host = Preprocessor(backend.model.preprocess)(images)
    assert np.abs(on_gpu.cpu().numpy() - host).mean() < 1e-3  # the same weights, applied on the GPU
    assert np.abs(backend.infer(on_gpu) - backend.infer(host)).max() < 0.05


@pytest.mark.gpu
@needs_trt
@pytest.mark.timeout(900)
def test_engine_cache_hit_miss_mismatch_and_corrupt(tmp_path, capsys):
    first = _backend(str(tmp_path), "fp16", batch=2, name="alexnet", weights="random")
    assert first.load.cache == "miss" and first.load.build_s > 0
    # AlexNet's 61 M weights in fp16 live outside torch's allocator: they must be in the CUDA figure.
    assert first.device_peak_mb() >= 0.8 * 61e6 * 2 / 2**20
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
    # A rebuilt engine may pick other kernels than the first build: judge it against PyTorch, not bit-equality.
    _, batch, expected = _reference("alexnet", "random")
    got = corrupt.infer(batch[:2])
    scale = np.abs(expected[:2]).max()
    cosine = (got * expected[:2]).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected[:2], axis=1)
    assert np.abs(got - expected[:2]).max() <= 0.05 * scale and cosine.min() > 0.999


@pytest.mark.gpu
@needs_trt
@pytest.mark.timeout(1500)
def test_pipeline_end_to_end_with_trt(cat_clip, tmp_path):
    cache = str(tmp_path / "cache")  # a fresh cache: the first run builds, the second must hit
    reports = []
    for run_no in (1, 2):
        report, preds = tmp_path / f"r{run_no}.json", tmp_path / f"p{run_no}.jsonl"
        run = run_cli("--source", str(cat_clip), "--trt", "--model", "efficientnet_lite0", "--batch", "4",
                      "--cache-dir", cache, "--output", str(tmp_path / "o.mp4"), "--report", str(report),
                      "--predictions", str(preds), timeout=600)
        assert run.returncode == 0, run.stderr
        data = json.loads(report.read_text())
        assert data["model"]["backend"] == "tensorrt" and data["model"]["precision"] == "fp16"
        assert data["frames"]["written"] == data["frames"]["read"] == 24
        labels = [json.loads(line)["top"][0]["label"] for line in preds.read_text().splitlines()]
        assert sum(label in CAT_LABELS for label in labels) >= 0.9 * len(labels), labels
        assert data["memory"]["device_peak_mb"] > 0 and data["latency_ms"]["preprocess"]["p50"] > 0
        reports.append(data)
        print("TRT pipeline:", json.dumps({k: data[k] for k in ("fps", "load", "memory")}))
    assert reports[0]["load"]["cache"] == "miss" and reports[0]["load"]["build_s"] > 0
    assert reports[1]["load"]["cache"] == "hit" and reports[1]["load"]["build_s"] is None


@pytest.mark.gpu
@needs_trt
@pytest.mark.skipif(not HAS_CUDA or __import__("torch").cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_an_engine_on_the_second_gpu_runs_from_another_thread(trt_cache):
    import threading

    import torch

    from models import ModelRequest
    from stream.backends import BackendOptions
    from stream.backends.tensorrt_backend import TensorRTBackend

    model, batch, expected = _reference("efficientnet_lite0", "imagenet")
    backend = TensorRTBackend(ModelRequest("efficientnet_lite0", "imagenet"),
                              BackendOptions(device="cuda:1", precision="fp32", max_batch=4, cache_dir=trt_cache))
    assert torch.cuda.current_device() == 0  # the constructor left this thread's device alone
    got = {}
    worker = threading.Thread(target=lambda: got.update(logits=backend.infer(batch)))  # a fresh thread: device 0
    worker.start()
    worker.join(120)
    assert np.abs(got["logits"] - expected).max() < 1e-2


@pytest.mark.gpu
@needs_trt
@pytest.mark.timeout(900)
def test_tensorrt_int8_from_the_symmetric_qdq_model(trt_cache, tmp_path):
    """int8: an explicitly quantized (Q/DQ, zero point 0) network, built strongly typed; its calibration in the key."""
    import onnx

    from stream.pipeline.postprocess import top_k

    model, batch, expected = _reference("efficientnet_lite0", "imagenet")
    backend = _backend(trt_cache, "int8")
    assert backend.precision == "int8" and backend.load.cache in ("miss", "hit")
    qdq = onnx.load(str(Path(trt_cache) / "onnx" / _engine_fields_of(backend)["int8_model"]), load_external_data=False)
    zero_points = [i for n in qdq.graph.node if n.op_type == "QuantizeLinear" for i in n.input[2:3]]
    inits = {t.name: t for t in qdq.graph.initializer}
    assert zero_points and all(not onnx.numpy_helper.to_array(inits[z]).any() for z in zero_points if z in inits)
    got = backend.infer(batch)
    ours, theirs = top_k(got, model.categories, 5), top_k(expected, model.categories, 5)
    assert [row[0].index for row in ours] == [row[0].index for row in theirs]
    cosine = (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosine.min() > 0.98


def _engine_fields_of(backend) -> dict:
    sidecar = Path(backend.load.artifact + ".json")
    return json.loads(sidecar.read_text())["fields"]


def test_torch2trt_with_int8_is_refused_in_one_line(monkeypatch):
    from models import ModelRequest
    from stream.backends import BackendOptions
    from stream.backends.tensorrt_backend import TensorRTBackend

    fake = types.ModuleType("tensorrt")
    fake.__version__ = "10.9.0"
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    with pytest.raises(UserError, match="default --trt-converter onnx"):
        TensorRTBackend(ModelRequest("alexnet", "random"),
                        BackendOptions(device="cuda", precision="int8", trt_converter="torch2trt"))


# ------------------------------------------- the engine's cache flow against stand-ins for tensorrt and torch


class FakeEngine:
    num_io_tensors = 2
    device_memory_size_v2 = 0

    def __init__(self, plan: bytes) -> None:
        self.plan = plan

    def create_execution_context(self):
        return object()

    def get_tensor_name(self, i):
        return ("input", "logits")[i]

    def get_tensor_mode(self, name):
        return name == "input"  # FakeTensorRT.TensorIOMode.INPUT is True

    def get_tensor_dtype(self, name):
        return "f32"


def _fake_runtime_trt() -> FakeTensorRT:
    trt = FakeTensorRT()
    trt.ILogger = type("ILogger", (), {"__init__": lambda self: None,
                                       "Severity": SimpleNamespace(INTERNAL_ERROR=0, ERROR=1, WARNING=2)})
    # An engine deserialises from what the fake builder wrote; anything else is "corrupt".
    trt.Runtime = lambda logger: SimpleNamespace(
        deserialize_cuda_engine=lambda data: FakeEngine(data) if data == b"plan" else None)
    trt.TensorIOMode = SimpleNamespace(INPUT=True, OUTPUT=False)
    trt.float32, trt.float16 = "f32", "f16"
    return trt


def _fake_cuda_torch():
    props = SimpleNamespace(name="Fake GPU", major=9, minor=0)
    cuda = SimpleNamespace(get_device_properties=lambda device: props, mem_get_info=lambda device: (8 << 30, 16 << 30),
                           Stream=lambda device: object(), reset_peak_memory_stats=lambda device: None)
    return SimpleNamespace(cuda=cuda, version=SimpleNamespace(cuda="13.0"), float32="torch.float32",
                           float16="torch.float16")


def test_the_engine_is_built_once_then_loaded_and_a_corrupt_one_rebuilt(tmp_path, monkeypatch, capsys):
    """The engine goes through the cache's one load-or-build flow: miss (built), hit, rebuilt (why)."""
    from models import ModelRequest
    from stream.backends import BackendOptions
    from stream.backends import tensorrt_backend as tb
    from stream.backends.onnx_model import OnnxModel

    onnx = OnnxModel(tmp_path / "m.onnx", SimpleNamespace(name="alexnet"), (3, 224, 224), 0.0, None, "hit")
    monkeypatch.setattr(tb, "onnx_for", lambda *args, **kwargs: onnx)

    def load():
        backend = tb.TensorRTBackend.__new__(tb.TensorRTBackend)
        backend.precision, backend.device, backend._max_batch = "fp16", "cuda:0", 2
        backend._trt, backend._torch = _fake_runtime_trt(), _fake_cuda_torch()
        backend._load(ModelRequest("alexnet", "random"), BackendOptions(device="cuda", cache_dir=str(tmp_path)))
        return backend

    first = load()
    assert first.load.cache == "miss" and first.load.build_s is not None and first._engine.plan == b"plan"
    assert "building the TensorRT engine for alexnet" in capsys.readouterr().out
    second = load()
    assert second.load.cache == "hit" and second.load.build_s is None and second.load.artifact == first.load.artifact
    sidecar = json.loads(Path(first.load.artifact + ".json").read_text())
    assert sidecar["meta"]["build_s"] >= 0 and sidecar["fields"]["gpu"] == "Fake GPU"
    Path(first.load.artifact).write_bytes(b"junk")  # same size as "plan": only the checksum catches it
    third = load()
    assert third.load.cache.startswith("rebuilt (") and "checksum" in third.load.cache
    assert "cached TensorRT engine for alexnet is unusable" in capsys.readouterr().out
