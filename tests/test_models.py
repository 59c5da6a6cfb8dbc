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
