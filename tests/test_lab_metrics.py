"""Measurement arithmetic of bench/eval: latency statistics, fidelity, real-time verdict, payback."""

import math

import numpy as np
import pytest

from stream.lab.metrics import Latency, fidelity, mean_std, payback_frames


def test_latency_is_per_image_with_linear_percentiles():
    lat = Latency.of([0.010, 0.020, 0.030, 0.040], batch=2)  # per image: 5, 10, 15, 20 ms
    assert lat.batches == 4 and lat.batch == 2
    assert lat.mean_ms == pytest.approx(12.5)
    assert lat.std_ms == pytest.approx(np.std([5, 10, 15, 20], ddof=1))
    assert lat.p50_ms == pytest.approx(12.5)
    assert lat.p95_ms == pytest.approx(5 + 0.95 * 3 * 5)  # numpy's linear interpolation
    assert lat.p99_ms == pytest.approx(5 + 0.99 * 3 * 5)
    assert lat.batch_p95_ms == pytest.approx(2 * lat.p95_ms)
    assert lat.throughput == pytest.approx(8 / 0.1)


def test_latency_of_one_batch_and_of_none():
    one = Latency.of([0.004], batch=4)
    assert one.std_ms == 0.0 and one.mean_ms == pytest.approx(1.0) and one.throughput == pytest.approx(1000)
    with pytest.raises(ValueError):
        Latency.of([], batch=1)


def test_mean_std_skips_missing_values():
    assert mean_std([2.0, None, 4.0]) == {"mean": 3.0, "std": pytest.approx(math.sqrt(2)), "n": 2}
    assert mean_std([5.0]) == {"mean": 5.0, "std": 0.0, "n": 1}
    assert mean_std([None])["mean"] is None


def test_fidelity_of_identical_outputs():
    ref = np.random.default_rng(0).normal(size=(4, 10)).astype(np.float32)
    f = fidelity(ref, ref.copy(), random_weights=False)
    assert f["max_abs_logit_diff"] == 0 and f["max_abs_prob_diff"] == 0
    assert f["min_cosine"] == pytest.approx(1.0)
    assert f["top1_agreement"] == 1.0 and f["top5_overlap"] == 1.0 and not f["weak_agreement"]


def test_fidelity_counts_by_hand():
    ref = np.array([[6, 5, 4, 3, 2, 1, 0], [6, 5, 4, 3, 2, 1, 0]], np.float64)
    out = ref.copy()
    out[1, 6] = 7.0  # row 2: class 6 jumps from last to first
    f = fidelity(ref, out, random_weights=True)
    assert f["max_abs_logit_diff"] == 7.0
    assert f["mean_abs_logit_diff"] == pytest.approx(7.0 / 14)
    assert f["logit_scale"] == 6.0
    assert f["top1_agreement"] == 0.5
    assert f["top5_overlap"] == pytest.approx((1.0 + 4 / 5) / 2)  # row 2's top-5 loses class 4, gains class 6
    p_ref = np.exp(ref[1]) / np.exp(ref[1]).sum()
    p_out = np.exp(out[1]) / np.exp(out[1]).sum()
    assert f["max_abs_prob_diff"] == pytest.approx(np.abs(p_out - p_ref).max())
    cos = ref[1] @ out[1] / np.linalg.norm(ref[1]) / np.linalg.norm(out[1])
    assert f["min_cosine"] == pytest.approx(cos) and f["mean_cosine"] == pytest.approx((1 + cos) / 2)
    assert f["weak_agreement"]


def test_fidelity_sees_scale_but_cosine_does_not():
    ref = np.array([[1.0, 2.0, 3.0]])
    assert fidelity(ref, 2 * ref, False)["min_cosine"] == pytest.approx(1.0)
    assert fidelity(ref, 2 * ref, False)["max_abs_logit_diff"] == pytest.approx(3.0)
    assert fidelity(ref, -ref, False)["min_cosine"] == pytest.approx(-1.0)
    with pytest.raises(ValueError):
        fidelity(ref, np.ones((2, 3)), False)


def test_payback_frames():
    assert payback_frames(2.0, 20.0, 15.0) == 400
    assert payback_frames(2.001, 20.0, 15.0) == 401  # a partial frame still has to be processed
    assert payback_frames(2.0, 15.0, 15.0) is None  # not faster: never pays back
    assert payback_frames(2.0, 10.0, 15.0) is None
    assert payback_frames(None, 20.0, 15.0) is None and payback_frames(2.0, None, 15.0) is None


def test_top1_agreement_on_clear_calls_leaves_near_ties_out():
    # Row 0: a clear call (probabilities 0.67 / 0.24 ...) that flips; row 1: a near-tie that flips;
    # row 2: a clear call kept.
    ref = np.array([[2.0, 1.0, 0.0], [1.0, 0.99, 0.0], [3.0, 0.0, 0.0]])
    out = np.array([[1.0, 2.0, 0.0], [0.99, 1.0, 0.0], [3.0, 0.1, 0.0]])
    f = fidelity(ref, out, random_weights=False)
    assert f["clear_frames"] == 2
    assert f["top1_agreement_clear"] == 0.5
    assert f["top1_agreement"] == pytest.approx(1 / 3)
