import numpy as np
import pytest
import torch
import torchvision

from models import ModelRequest, available_models, load_model
from stream.backends import BackendOptions, backend_class
from stream.backends.torch_backend import TorchBackend
from stream.errors import UserError
from stream.media.sample import photo
from stream.pipeline.preprocess import Preprocessor


def test_categories_and_preprocessing_come_from_the_weights_metadata():
    model = load_model("inception_v3", "random")
    meta = torchvision.models.Inception_V3_Weights.DEFAULT
    assert model.categories == meta.meta["categories"] and len(model.categories) == 1000
    assert (model.preprocess.resize, model.preprocess.crop) == (342, 299)  # not AlexNet's 256/224
    assert model.random_weights and model.weights == "random"


def test_unknown_model_lists_the_choices():
    with pytest.raises(UserError, match="unknown model 'alexnett'.*alexnet.*efficientnet_lite0"):
        load_model("alexnett", "random")
    assert {"alexnet", "vgg16", "resnet50", "efficientnet_lite0"} <= set(available_models())


def test_local_weights_load_exactly_and_wrong_architecture_is_refused(tmp_path):
    reference = torchvision.models.resnet18()
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": reference.state_dict()}, path)  # the common checkpoint wrapper
    loaded = load_model("resnet18", str(path))
    for name, tensor in reference.state_dict().items():
        assert torch.equal(loaded.module.state_dict()[name], tensor), name
    with pytest.raises(UserError, match="do not fit model alexnet"):
        load_model("alexnet", str(path))
    with pytest.raises(UserError, match="not found"):
        load_model("alexnet", str(tmp_path / "missing.pth"))


def test_torch_backend_returns_the_modules_own_logits():
    model = load_model("efficientnet_lite0", "imagenet")
    batch = Preprocessor(model.preprocess)([photo("chelsea"), photo("coffee")])
    with torch.inference_mode():
        expected = model.module(torch.from_numpy(batch)).numpy()
    backend = TorchBackend(ModelRequest("efficientnet_lite0"), BackendOptions(device="cpu"))
    assert backend.precision == "fp32" and backend.load.cache == "not used"
    logits = backend.infer(batch)
    assert logits.shape == (2, 1000) and logits.dtype == np.float32
    assert np.abs(logits - expected).max() < 1e-3  # channels-last changes summation order only
    assert model.categories[int(logits[1].argmax())] == "espresso"
    assert backend.warmup(1, 2) > 0
    assert backend.device_peak_mb() is None


def test_backend_factory_and_device_errors():
    assert backend_class("torch") is TorchBackend
    with pytest.raises(UserError, match="unknown backend"):
        backend_class("onnx")
    request = ModelRequest("alexnet", "random")
    with pytest.raises(UserError, match="fp16 needs a CUDA GPU"):
        TorchBackend(request, BackendOptions(device="cpu", precision="fp16"))
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA GPU"):
            TorchBackend(request, BackendOptions(device="cuda"))


def test_random_weights_are_seeded_so_their_cached_exports_are_reproducible():
    a, b = load_model("alexnet", "random"), load_model("alexnet", "random")
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    load_model("alexnet", "random")
    assert torch.equal(torch.rand(1), expected)  # the caller's RNG state is untouched
    for (name, x), y in zip(a.module.state_dict().items(), b.module.state_dict().values(), strict=True):
        assert torch.equal(x, y), name


def test_on_a_gpu_every_model_call_runs_on_the_backends_own_thread(monkeypatch):
    """cuDNN's plans are cached per thread: the warm-up's must be the inference thread's. Forced on the CPU here
    (the same code path): every forward pass, from the loading thread and two others, runs on one thread, with
    the logits of a backend that calls in place, and an error in a call is the caller's."""
    import threading

    from stream.backends import torch_backend

    model = load_model("efficientnet_lite0", "imagenet")
    batch = Preprocessor(model.preprocess)([photo("chelsea"), photo("coffee")])
    plain = TorchBackend(ModelRequest("efficientnet_lite0"), BackendOptions(device="cpu"))
    expected = plain.infer(batch)
    plain.close()
    monkeypatch.setattr(torch_backend, "own_thread", lambda device: True)
    backend = TorchBackend(ModelRequest("efficientnet_lite0"), BackendOptions(device="cpu"))
    seen = []
    backend._module.register_forward_hook(lambda *args: seen.append(threading.get_ident()))
    backend.warmup(1, 2)
    results = []
    callers = [threading.Thread(target=lambda: results.append(backend.infer(batch))) for _ in range(2)]
    for t in callers:
        t.start()
    for t in callers:
        t.join(60)
    assert len(seen) == 4 and len(set(seen)) == 1 and seen[0] != threading.get_ident()
    assert all(t.ident not in seen for t in callers)
    assert len(results) == 2 and all(np.array_equal(r, expected) for r in results)
    with pytest.raises(RuntimeError):
        backend.infer(np.zeros((1, 3, 7, 7), np.float32))  # too small for the network: raised here, not lost
    padded = TorchBackend(ModelRequest("efficientnet_lite0"), BackendOptions(device="cpu", max_batch=4))
    shapes = []
    padded._module.register_forward_hook(lambda module, inputs, output: shapes.append(tuple(inputs[0].shape)))
    logits = padded.infer(batch[:1])  # a partial batch runs at the batch's shape: one set of cuDNN plans
    assert shapes == [(4, 3, 224, 224)] and logits.shape == (1, 1000)
    assert np.abs(logits - expected[:1]).max() < 1e-4
    padded.close()

    from stream.observe.cpu import _role

    assert _role(backend._device_thread._thread.name) == "inference_pool"  # its CPU is the model's
    backend.close()
    assert not backend._device_thread._thread.is_alive()
