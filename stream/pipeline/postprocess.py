"""Logits → probabilities → top-k labelled classes."""

from __future__ import annotations

import numpy as np

from stream.frames import TopK


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)  # avoids overflow in exp
    exp = np.exp(shifted, dtype=np.float64)
    return exp / exp.sum(axis=1, keepdims=True)


def top_k(logits: np.ndarray, categories: list[str], k: int = 5) -> list[list[TopK]]:
    """Top-k of every row of an N×C logits array, highest probability first."""
    if logits.ndim != 2 or logits.shape[1] != len(categories):
        raise ValueError(f"logits of shape {logits.shape} do not match {len(categories)} categories")
    probs = softmax(logits)
    k = min(k, probs.shape[1])
    part = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    rows = []
    for row, idx in zip(probs, part, strict=True):
        order = idx[np.argsort(-row[idx], kind="stable")]
        rows.append([TopK(int(i), categories[i], float(row[i])) for i in order])
    return rows
