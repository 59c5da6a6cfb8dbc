"""Preprocessing against the definition of a correct input: torchvision's transform of the weights,
applied through PIL, on real photographs and real (encoded, decoded) video frames of several sizes."""

import threading

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import stream.pipeline.preprocess as preprocess_module
from models.registry import reference_transform, spec_of
from models.spec import PreprocessSpec
from stream.media.sample import pan_zoom, photo
from stream.pipeline.preprocess import FastPreprocessor, Preprocessor, make_preprocessor
from stream.pipeline.preprocess_gpu import TorchPreprocessor
from stream.pipeline.resample import axis_weights, crop_plan
from tests.conftest import read_all_frames

# One 8-bit step in normalised units is 1 / (255 · std) ≈ 0.0175 for ImageNet's std. PIL filters rows
# first and rounds and clips between its passes; the faithful path filters columns first and rounds once,
# so it may differ by a single step here and there, and by a few where bicubic overshoots a saturated edge.
STEP = 1 / (255 * 0.224)
OFF_BY_MORE = 0.002  # the share of values allowed to differ by more than one step
MEAN_GOAL = 0.005  # mean |difference| in normalised units (the goal)
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina")  # 300 px … 1411 px
VIDEO_SIZES = ((640, 480), (768, 576), (1280, 720), (1920, 1080), (480, 640))


def pil_reference(name: str, bgr: np.ndarray) -> np.ndarray:
    return reference_transform(name)(Image.fromarray(np.ascontiguousarray(bgr[:, :, ::-1]))).numpy()


@pytest.fixture(scope="module")
def real_frames(tmp_path_factory) -> list[tuple[str, np.ndarray]]:
    """Photographs at their own size, and frames decoded from videos encoded from them (real codec noise)."""
    frames = [(name, photo(name)) for name in PHOTOS]
    folder = tmp_path_factory.mktemp("preprocess")
    for k, (w, h) in enumerate(VIDEO_SIZES):
        path = folder / f"clip-{w}x{h}.avi"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (w, h))
        for frame in pan_zoom(photo(PHOTOS[k % 4]), w, h, 3, zoom=1.3):
            writer.write(frame)
        writer.release()
        frames += [(f"{path.name}#{i}", f) for i, f in enumerate(read_all_frames(path))]
    assert len(frames) == len(PHOTOS) + 3 * len(VIDEO_SIZES)
    return frames


@pytest.mark.parametrize("model", ["alexnet", "efficientnet_lite0"])  # bilinear and bicubic weights
def test_faithful_path_matches_torchvision_through_pil(real_frames, model):
    spec = spec_of(reference_transform(model))
    preprocess = Preprocessor(spec)
    means = []
    for label, bgr in real_frames:
        ours, ref = preprocess([bgr])[0], pil_reference(model, bgr)
        diff = np.abs(ours - ref)
        assert np.mean(diff > STEP * 1.01) <= OFF_BY_MORE, label
        means.append(diff.mean())
    assert max(means) <= MEAN_GOAL, means
    if model == "alexnet":  # bilinear never overshoots: within one step everywhere
        assert all(np.abs(preprocess([bgr])[0] - pil_reference(model, bgr)).max() <= STEP * 1.01
                   for _, bgr in real_frames[:3])


def test_fast_mode_is_not_faithful(real_frames):
    """The reason it is opt-in: without antialiasing the input is far from the weights' transform."""
    spec = spec_of(reference_transform("alexnet"))
    diffs = [np.abs(FastPreprocessor(spec)([bgr])[0] - pil_reference("alexnet", bgr)).mean() for _, bgr in real_frames]
    assert np.mean(diffs) > 3 * MEAN_GOAL


def test_interpolation_follows_the_weights():
    assert spec_of(reference_transform("alexnet")).interpolation == "bilinear"
    assert spec_of(reference_transform("efficientnet_lite0")).interpolation == "bicubic"
    assert spec_of(reference_transform("efficientnet_b0")).interpolation == "bicubic"
    # resnet50's current weights resize to 232, not 256: the spec follows them, not a habit.
    assert spec_of(reference_transform("resnet50")).resize == 232


def test_upscaling_and_odd_sizes_match_pil():
    """Small and odd-sized inputs (upscaled, so the filter does not widen) check the crop geometry:
    a one-pixel shift of the box or swapped channels would show as many-step differences."""
    rng = np.random.default_rng(0)
    spec = spec_of(reference_transform("alexnet"))
    for h, w in [(150, 200), (257, 1000), (999, 256), (224, 224)]:
        bgr = cv2.resize(rng.integers(0, 256, (h // 5 + 1, w // 5 + 1, 3), dtype=np.uint8), (w, h),
                         interpolation=cv2.INTER_NEAREST)
        diff = np.abs(Preprocessor(spec)([bgr])[0] - pil_reference("alexnet", bgr))
        assert diff.max() <= STEP * 1.01 and diff.mean() <= MEAN_GOAL, (h, w)


def test_weights_are_pillows_and_read_only_the_crop_region():
    axis = axis_weights(1280, 455, 115, 224, "bilinear")
    assert np.allclose(axis.weights.sum(axis=1), 1.0)
    # Each output's taps lie within the filter's support around its centre (2.81 px per output here).
    scale = 1280 / 455
    centres = (np.arange(115, 339) + 0.5) * scale
    for row, centre in zip(axis.weights, centres, strict=True):
        taps = np.nonzero(row)[0] + axis.start
        assert taps.min() >= centre - scale - 1 and taps.max() <= centre + scale + 1
    plan = crop_plan(720, 1280, spec_of(reference_transform("alexnet")))
    assert 0 < plan.cols.start and plan.cols.stop < 1280  # the sides of a wide frame are never read
    assert plan.rows.weights.shape[0] == plan.cols.weights.shape[0] == 224


def test_batch_holds_each_frame_in_order():
    preprocess = Preprocessor(spec_of(reference_transform("alexnet")))
    a, b = photo("chelsea"), photo("coffee")
    batch = preprocess([a, b, a])
    assert batch.shape == (3, 3, 224, 224) and batch.dtype == np.float32
    assert np.array_equal(batch[0], batch[2])
    assert not np.allclose(batch[0], batch[1])


def test_kept_scratch_arrays_give_the_allocating_path_s_numbers(real_frames, monkeypatch):
    spec = spec_of(reference_transform("efficientnet_lite0"))  # bicubic: rounding and clipping both matter
    frames = [bgr for _, bgr in real_frames[::3]]
    kept = Preprocessor(spec)(frames)
    monkeypatch.setattr(preprocess_module, "_matvecs", None)
    assert np.array_equal(kept, Preprocessor(spec)(frames))


def test_threads_sharing_a_preprocessor_do_not_share_its_scratch():
    preprocess = Preprocessor(spec_of(reference_transform("alexnet")))
    images = [photo(name) for name in ("chelsea", "coffee")]
    images = [cv2.resize(image, (640, 480)) for image in images]  # one frame size: one plan for both threads
    expected = [preprocess([image])[0] for image in images]
    wrong = []

    def work(k: int) -> None:
        for _ in range(40):
            if not np.array_equal(preprocess([images[k]])[0], expected[k]):
                wrong.append(k)

    threads = [threading.Thread(target=work, args=(k % 2,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not wrong


def test_make_preprocessor_picks_the_mode():
    spec = PreprocessSpec(256, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert isinstance(make_preprocessor(spec, "cpu"), Preprocessor)
    assert isinstance(make_preprocessor(spec, "cpu", "fast"), FastPreprocessor)


def _gpu_path_matches(device: str, real_frames) -> None:
    for model in ("alexnet", "efficientnet_lite0"):
        spec = spec_of(reference_transform(model))
        for label, bgr in real_frames[::3]:
            pair = [bgr, np.ascontiguousarray(bgr[:, ::-1])]
            ours = TorchPreprocessor(spec, device)(pair).cpu().numpy()
            for got, image in zip(ours, pair, strict=True):
                diff = np.abs(got - pil_reference(model, image))
                assert np.mean(diff > STEP * 1.01) <= OFF_BY_MORE and diff.mean() <= MEAN_GOAL, (model, label)
        # Same weights, same order of passes as the host path: equal up to float rounding at .5 ties.
        mixed = TorchPreprocessor(spec, device)([photo("chelsea"), photo("coffee")]).cpu().numpy()
        host = Preprocessor(spec)([photo("chelsea"), photo("coffee")])
        assert np.mean(np.abs(mixed - host) > 1e-4) < 0.001


def test_gpu_path_on_cpu_tensors_matches_torchvision(real_frames):
    # The same code as on CUDA, on CPU tensors; the gpu-marked test below repeats it on a GPU.
    _gpu_path_matches("cpu", real_frames)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_path_on_cuda_matches_torchvision(real_frames):
    _gpu_path_matches("cuda", real_frames)


def test_gpu_fast_mode_matches_the_host_fast_mode():
    spec = PreprocessSpec(256, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    for shape in [(720, 1280), (480, 360), (224, 224)]:
        image = cv2.resize(photo("chelsea"), shape[::-1], interpolation=cv2.INTER_AREA)
        host = FastPreprocessor(spec)([image])
        tensors = TorchPreprocessor(spec, "cpu", "fast")([image]).numpy()
        diff = np.abs(tensors - host)
        assert diff.mean() < 0.01 and diff.max() < 0.1, shape


def test_plans_are_kept_for_a_bounded_number_of_frame_sizes():
    preprocess = Preprocessor(spec_of(reference_transform("alexnet")))
    image = photo("coffee")
    for k in range(20):  # an image folder of many sizes must not grow the cache without end
        preprocess([np.ascontiguousarray(image[: 300 + k, : 400 + k])])
    assert len(preprocess._plans) == 16
