"""The OpenCV/numpy preprocessing against torchvision's own transform for the same weights."""

import cv2
import numpy as np
import pytest
import torch
from torchvision.models import get_model_weights

from models.spec import PreprocessSpec
from stream.preprocess import Preprocessor
from stream.sample import photo


@pytest.fixture(scope="module")
def reference():
    transform = get_model_weights("alexnet").DEFAULT.transforms()
    spec = PreprocessSpec(transform.resize_size[0], transform.crop_size[0], tuple(transform.mean),
                          tuple(transform.std))
    return transform, Preprocessor(spec)


def torchvision_input(transform, bgr: np.ndarray) -> np.ndarray:
    rgb = torch.from_numpy(np.ascontiguousarray(bgr[:, :, ::-1])).permute(2, 0, 1)
    return transform(rgb).numpy()


@pytest.mark.parametrize("name", ["chelsea", "coffee", "astronaut"])
@pytest.mark.parametrize("size", [(1280, 720), (1920, 1080), (480, 640)])
def test_matches_torchvision_within_interpolation_noise(reference, name, size):
    transform, preprocess = reference
    bgr = cv2.resize(photo(name), size, interpolation=cv2.INTER_AREA)
    ours = preprocess([bgr])[0]
    theirs = torchvision_input(transform, bgr)
    assert ours.shape == theirs.shape == (3, 224, 224)
    diff = np.abs(ours - theirs)
    # Bilinear without antialiasing vs torchvision's antialiased resize: small, spread-out noise.
    assert diff.mean() < 0.07
    assert np.percentile(diff, 99) < 0.6


def test_geometry_is_exact_when_no_antialiasing_is_involved(reference):
    """Upscaling (no antialias filter on either side) isolates the crop-box and channel-order maths:
    a one-pixel shift of the box or swapped channels would show up as large differences."""
    transform, preprocess = reference
    rng = np.random.default_rng(0)
    bgr = cv2.resize(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8), (200, 150), interpolation=cv2.INTER_NEAREST)
    diff = np.abs(preprocess([bgr])[0] - torchvision_input(transform, bgr))
    assert diff.mean() < 0.02


def test_batch_holds_each_frame_in_order(reference):
    _, preprocess = reference
    a, b = photo("chelsea"), photo("coffee")
    batch = preprocess([a, b, a])
    assert batch.shape == (3, 3, 224, 224) and batch.dtype == np.float32
    assert np.array_equal(batch[0], batch[2])
    assert not np.allclose(batch[0], batch[1])


def test_gpu_preprocessor_matches_the_opencv_path_on_cpu_tensors():
    # The GPU path's geometry is checked here on CPU tensors; tests/test_tensorrt.py repeats it on a GPU.
    from stream.preprocess_gpu import TorchPreprocessor

    spec = PreprocessSpec(256, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    for shape in [(720, 1280), (480, 360), (224, 224)]:
        image = cv2.resize(photo("chelsea"), shape[::-1], interpolation=cv2.INTER_AREA)
        host = Preprocessor(spec)([image, image[:, ::-1].copy()])
        tensors = TorchPreprocessor(spec, "cpu")([image, image[:, ::-1].copy()])
        assert tuple(tensors.shape) == host.shape
        diff = np.abs(tensors.numpy() - host)
        assert diff.mean() < 0.01 and diff.max() < 0.1, shape
    mixed = TorchPreprocessor(spec, "cpu")([photo("chelsea"), photo("coffee")])  # two sizes in one batch
    assert np.abs(mixed.numpy() - Preprocessor(spec)([photo("chelsea"), photo("coffee")])).mean() < 0.01
