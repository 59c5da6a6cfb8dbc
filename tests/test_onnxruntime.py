"""ONNX Runtime backend: parity with PyTorch on real photographs, the export cache, a torch-free warm start."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from models import ModelRequest, load_model
from stream.backends import BackendOptions, backend_class
from stream.backends.onnxruntime_backend import OnnxRuntimeBackend, choose_providers
from stream.errors import UserError
from stream.media.sample import photo
from stream.pipeline.postprocess import top_k
from stream.pipeline.preprocess import Preprocessor

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("artifacts"))


def reference(name: str, weights: str):
    """PyTorch fp32 logits of the plain module (no channels-last) on real photographs."""
    model = load_model(name, weights)
    batch = Preprocessor(model.preprocess)([photo(p) for p in PHOTOS])
    with torch.inference_mode():
        return model, batch, model.module(torch.from_numpy(batch)).numpy()


def test_alexnet_random_weights_logits_match_pytorch(cache_dir):
    # Random weights give near-uniform probabilities, so the logits are compared, not the labels.
    model, batch, expected = reference("alexnet", "random")
    backend = OnnxRuntimeBackend(ModelRequest("alexnet", "random"), BackendOptions(device="cpu", cache_dir=cache_dir))
    got = backend.infer(batch)
    assert got.shape == expected.shape == (len(PHOTOS), 1000)
    scale = np.abs(expected).max()
    assert np.abs(got - expected).max() <= 1e-4 * scale
    assert backend.model.categories == tuple(model.categories) and backend.model.random_weights
    assert backend.device == "cpu" and backend.precision == "fp32"


def test_efficientnet_lite0_real_weights_logits_close_and_top5_identical(cache_dir):
    model, batch, expected = reference("efficientnet_lite0", "imagenet")
    backend = OnnxRuntimeBackend(ModelRequest("efficientnet_lite0"), BackendOptions(device="cpu", cache_dir=cache_dir))
    got = backend.infer(batch)
    assert np.abs(got - expected).max() < 1e-3
    ours, theirs = top_k(got, model.categories, 5), top_k(expected, model.categories, 5)
    assert [[t.index for t in row] for row in ours] == [[t.index for t in row] for row in theirs]
    assert ours[0][0].label in ("Egyptian cat", "tabby", "tiger cat")
    assert ours[1][0].label == "espresso"


def test_second_start_is_a_cache_hit_and_a_corrupt_export_is_rebuilt(cache_dir, capsys):
    request, options = ModelRequest("alexnet", "random"), BackendOptions(device="cpu", cache_dir=cache_dir, max_batch=2)
    first = OnnxRuntimeBackend(request, options)  # exported by an earlier test or now
    second = OnnxRuntimeBackend(request, options)
    assert second.load.cache == "hit" and second.load.build_s is None
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    assert np.array_equal(first.infer(x), second.infer(x))
    weights = Path(second.load.artifact + ".data")  # the export keeps its weights beside the graph
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside the weights still loads: only the checksum catches it
    weights.write_bytes(bytes(data))
    capsys.readouterr()
    third = OnnxRuntimeBackend(request, options)
    assert third.load.cache.startswith("rebuilt (") and "checksum" in third.load.cache
    assert third.load.build_s > 0
    assert "unusable" in capsys.readouterr().out
    assert np.array_equal(third.infer(x), first.infer(x))


def test_batching_gives_the_same_logits_as_single_frames(cache_dir):
    backend = OnnxRuntimeBackend(ModelRequest("alexnet", "random"), BackendOptions(device="cpu", cache_dir=cache_dir))
    _, batch, _ = reference("alexnet", "random")
    together = backend.infer(batch)
    alone = np.concatenate([backend.infer(batch[i:i + 1]) for i in range(len(batch))])
    assert np.allclose(together, alone, rtol=1e-5, atol=1e-6 * np.abs(alone).max())


def test_a_warm_start_imports_no_torch(cache_dir, cat_clip):
    OnnxRuntimeBackend(ModelRequest("alexnet", "random"), BackendOptions(device="cpu", cache_dir=cache_dir))
    code = (
        "import sys; from stream.cli import main; "
        f"rc = main(['--source', {str(cat_clip)!r}, '--backend', 'onnxruntime', '--weights', 'random', "
        f"'--cache-dir', {cache_dir!r}, '--no-display', '--no-dashboard']); "
        "print('TORCH_IMPORTED', 'torch' in sys.modules); sys.exit(rc)"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "TORCH_IMPORTED False" in run.stdout
    assert "cache hit" in run.stdout


def test_provider_choice():
    cpu_only = ["CPUExecutionProvider"]
    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers("auto", cpu_only) == (["CPUExecutionProvider"], "cpu")
    assert choose_providers("auto", gpu) == (gpu, "cuda:0")
    assert choose_providers("cpu", gpu) == (["CPUExecutionProvider"], "cpu")
    assert choose_providers("cuda:1", gpu[1:]) == (gpu[1:], "cuda:1")
    with pytest.raises(UserError, match="onnxruntime-gpu"):
        choose_providers("cuda", cpu_only)


def test_factory_and_precision_errors(cache_dir):
    assert backend_class("onnxruntime") is OnnxRuntimeBackend
    with pytest.raises(UserError, match="fp16 with ONNX Runtime needs a GPU"):
        OnnxRuntimeBackend(ModelRequest("alexnet", "random"),
                           BackendOptions(device="cpu", precision="fp16", cache_dir=cache_dir))


def test_a_model_the_exporter_cannot_express_is_a_one_line_error(tmp_path, monkeypatch):
    import models.export

    def refuse(*args, **kwargs):
        raise RuntimeError("Exporting the operator 'aten::fancy' to ONNX opset 17 is not supported.\nmore")

    monkeypatch.setattr(models.export, "export_onnx", refuse)
    with pytest.raises(UserError, match=r"could not export alexnet to ONNX \(Exporting the operator.*--backend torch"):
        OnnxRuntimeBackend(ModelRequest("alexnet", "random"), BackendOptions(device="cpu", cache_dir=str(tmp_path)))
    assert not list((tmp_path / "onnx").glob("*.onnx"))  # nothing half-written is left to load


def test_fp16_export_is_an_fp16_graph_with_fp32_io_and_leaves_the_module_alone(tmp_path):
    # The form TensorRT 11 needs for fp16 (strongly typed); ONNX Runtime's CPU provider can run it too.
    import onnx
    import onnxruntime as ort

    from models.export import export_onnx

    model, batch, expected = reference("efficientnet_lite0", "imagenet")
    export_onnx(model.module, tmp_path / "m.onnx", model.preprocess.crop, "fp16")
    assert all(p.dtype == torch.float32 for p in model.module.parameters())
    graph = onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)
    f32, f16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert graph.graph.input[0].type.tensor_type.elem_type == f32
    assert graph.graph.output[0].type.tensor_type.elem_type == f32
    assert {t.data_type for t in graph.graph.initializer if t.data_type in (f32, f16)} == {f16}
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": batch})[0]
    assert list(got.argmax(1)) == list(expected.argmax(1))  # same top-1 on every photograph
    assert np.abs(got - expected).max() < 0.5
    print(f"fp16 graph vs PyTorch fp32: max |logit diff| {np.abs(got - expected).max():.4f}")
