"""The Ray engine's pieces that need no Ray: the uint8 wire format is exact, the sizing rules, the tally."""

import os

import numpy as np
import pytest

from models.spec import PreprocessSpec
from stream.cluster.deployment import normalise, placement
from stream.cluster.engine import chunk, in_flight
from stream.cluster.remote_inference import Uint8Crop
from stream.cluster.stream_actor import restart_path
from stream.cluster.wire import BatchTally, ModelInput, Reply, frames_in
from stream.media.sample import pan_zoom, photo
from stream.pipeline.preprocess import FastPreprocessor, Preprocessor
from stream.pipeline.resample import normalisation

SPECS = [PreprocessSpec(256, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bicubic"),
         PreprocessSpec(256, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bilinear")]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.interpolation)
@pytest.mark.parametrize("resize", ["faithful", "fast"])
def test_the_uint8_crop_normalised_in_the_replica_is_the_local_input_bit_for_bit(spec, resize):
    frames = [*pan_zoom(photo("chelsea"), 1280, 720, 3), *pan_zoom(photo("coffee"), 640, 480, 3)]
    local = (Preprocessor(spec) if resize == "faithful" else FastPreprocessor(spec))(frames)
    crop = Uint8Crop(spec, resize)
    pixels = np.stack([crop(f) for f in frames])
    assert pixels.dtype == np.uint8 and pixels.shape == (6, 3, 224, 224)
    remote = normalise(pixels, *normalisation(spec))
    assert remote.dtype == np.float32 and np.array_equal(remote, local)


def test_max_ongoing_requests_never_caps_the_batch_and_admits_every_stream():
    assert placement(1, 1.0, 0.0, 8, 8).max_ongoing_requests == 16  # two batches at least (ray#43288)
    assert placement(2, 1.0, 0.0, 8, 64).max_ongoing_requests == 32  # every stream's requests, over 2 replicas
    assert placement(4, 1.0, 1.0, 1, 2).max_ongoing_requests == 2


def test_files_send_half_a_batch_a_request_and_live_frames_go_alone():
    assert chunk(live=False, batch=8, streams=4) == 4 and chunk(live=False, batch=8, streams=1) == 8
    assert chunk(live=True, batch=8, streams=4) == 1 and chunk(live=False, batch=1, streams=3) == 1
    # Two batches of frames in flight per file stream, whatever the request size; two frames for a live one.
    assert in_flight(False, 8, 4) * chunk(False, 8, 4) == 16 and in_flight(True, 8, 4) == 2


def test_the_tally_counts_batches_exactly_from_the_frames_that_saw_them():
    tally = BatchTally()
    # One batch of 6 frames from two streams (4 + 2), then a batch of 1: each request reports once.
    tally.add(Reply(np.zeros((4, 10)), 6, 2, 12.0, "r1", "n1"))
    tally.add(Reply(np.zeros((2, 10)), 6, 2, 12.0, "r1", "n1"))
    tally.add(Reply(np.zeros((1, 10)), 1, 1, 3.0, "r1", "n1"))
    assert tally.frames == {("r1", "n1", 6): 6, ("r1", "n1", 1): 1}
    assert tally.multi_stream["r1"] == 6
    assert tally.model_s["r1"] == pytest.approx(0.012 + 0.003)  # each batch's model time, once
    other = BatchTally()
    other.add(Reply(np.zeros((1, 10)), 1, 1, 3.0, "r1", "n1"))
    tally.merge(other)
    assert tally.frames[("r1", "n1", 1)] == 2
    assert frames_in([ModelInput("a", np.zeros((4, 3, 2, 2), np.uint8)), ModelInput("b", np.zeros((2, 3, 2, 2)))]) == 6


def test_a_restarted_stream_writes_files_of_its_own():
    assert restart_path("out/cam.mp4", 0) == "out/cam.mp4"
    assert restart_path("out/cam.mp4", 2) == "out/cam.restart2.mp4"
    assert restart_path(None, 1) is None


def test_a_local_ray_is_started_as_a_single_node_and_the_switch_is_put_back(monkeypatch):
    from ray._private import ray_constants

    from stream.cluster.connect import SINGLE_NODE, loopback_only

    monkeypatch.delenv(SINGLE_NODE, raising=False)
    before = ray_constants.ENABLE_RAY_CLUSTER
    with loopback_only():
        # What ray.init reads: 127.0.0.1 stays the node's address (it is not swapped for the routable one).
        from ray._private.services import resolve_ip_for_localhost

        assert os.environ[SINGLE_NODE] == "0" and resolve_ip_for_localhost("127.0.0.1") == "127.0.0.1"
    assert ray_constants.ENABLE_RAY_CLUSTER == before and SINGLE_NODE not in os.environ
