"""Pure measurement arithmetic: latency statistics, output fidelity, payback (the real-time rule is
stream.observe.realtime)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from stream.pipeline.postprocess import softmax


@dataclass(frozen=True)
class Latency:
    """Per-image latency of timed batches: each batch's time divided by its size."""

    batches: int
    batch: int
    mean_ms: float
    std_ms: float
    min_ms: float  # the fastest batch: what the model costs when nothing else wants the cores
    p50_ms: float
    p95_ms: float
    p99_ms: float
    batch_p95_ms: float  # a whole batch, as a live source waits for it
    throughput: float  # images per second over all timed batches

    @staticmethod
    def of(batch_seconds: list[float], batch: int | list[int]) -> Latency:
        """`batch`: the size of every batch, or each batch's own size (eval's last batch may be short)."""
        sizes = np.asarray(batch if isinstance(batch, list) else [batch] * len(batch_seconds), np.float64)
        if not batch_seconds or sizes.size != len(batch_seconds) or (sizes < 1).any():
            raise ValueError("no timed batches")
        s = np.asarray(batch_seconds, np.float64)
        per_image = s * 1000 / sizes
        p50, p95, p99 = np.percentile(per_image, [50, 95, 99])
        return Latency(
            batches=int(s.size), batch=int(sizes.max()), mean_ms=float(per_image.mean()),
            std_ms=float(per_image.std(ddof=1)) if s.size > 1 else 0.0, min_ms=float(per_image.min()),
            p50_ms=float(p50), p95_ms=float(p95), p99_ms=float(p99),
            batch_p95_ms=float(np.percentile(s * 1000, 95)), throughput=float(sizes.sum() / s.sum()),
        )

    def as_dict(self) -> dict:
        return asdict(self)


def mean_std(values: list[float]) -> dict:
    """Mean and sample standard deviation (0 for a single value), with the count."""
    arr = np.asarray([v for v in values if v is not None], np.float64)
    if arr.size == 0:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0, "n": int(arr.size)}


def _top(logits: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-logits, axis=1, kind="stable")[:, :k]


CLEAR_LEAD = 0.1


def fidelity(reference: np.ndarray, output: np.ndarray, random_weights: bool) -> dict:
    """How far `output` logits are from `reference` logits for the same inputs (rows = images)."""
    if reference.shape != output.shape or reference.ndim != 2:
        raise ValueError(f"logits of shapes {reference.shape} and {output.shape} cannot be compared")
    ref, out = reference.astype(np.float64), output.astype(np.float64)
    diff = np.abs(out - ref)
    prob_diff = np.abs(softmax(out) - softmax(ref))
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    cosine = np.where(norms > 0, (ref * out).sum(axis=1) / np.where(norms > 0, norms, 1), 1.0)
    k = min(5, ref.shape[1])
    top_ref, top_out = _top(ref, k), _top(out, k)
    overlap = [len(set(a) & set(b)) / k for a, b in zip(top_ref, top_out, strict=True)]
    # Frames the reference calls clearly (its top-1 probability leads the runner-up by at least 0.1):
    # a change of label there is a real change, not a near-tie tipping over.
    ranked = np.sort(softmax(ref), axis=1)
    clear = ranked[:, -1] - ranked[:, -2] >= CLEAR_LEAD if ref.shape[1] > 1 else np.ones(len(ref), bool)
    return {
        "images": int(ref.shape[0]),
        "max_abs_logit_diff": float(diff.max()),
        "mean_abs_logit_diff": float(diff.mean()),
        "logit_scale": float(np.abs(ref).max()),  # what the differences are small or large against
        "max_abs_prob_diff": float(prob_diff.max()),
        "min_cosine": float(cosine.min()),
        "mean_cosine": float(cosine.mean()),
        "top1_agreement": float(np.mean(top_ref[:, 0] == top_out[:, 0])),
        "top5_overlap": float(np.mean(overlap)),
        "clear_frames": int(clear.sum()),
        "top1_agreement_clear": float(np.mean(top_ref[clear, 0] == top_out[clear, 0])) if clear.any() else None,
        # Random weights give near-uniform probabilities: a tiny change can swap labels, so the
        # agreement figures say little there and the logit differences are what to read.
        "weak_agreement": bool(random_weights),
    }


def payback_frames(build_s: float | None, baseline_ms: float | None, row_ms: float | None) -> int | None:
    """Frames after which a one-off build (export, engine) has saved its own time against the baseline.

    None when there is no build, no baseline, or the row is not faster (it never pays back).
    """
    if build_s is None or baseline_ms is None or row_ms is None:
        return None
    saved_ms = baseline_ms - row_ms
    if saved_ms <= 0:
        return None
    return max(1, math.ceil(build_s * 1000 / saved_ms))
