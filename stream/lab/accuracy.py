"""Top-1/top-5 counting over labelled images, per class, with the images a model got wrong."""

from __future__ import annotations

import numpy as np

from stream.pipeline.postprocess import softmax


def score(logits: np.ndarray, targets: list[int], labels: list[str], paths: list[str],
          categories: list[str], k: int = 5) -> dict:
    """Counts and rates for logits (N×C) against target class indices; `labels` as the user wrote them."""
    if logits.shape[0] != len(targets):
        raise ValueError(f"{logits.shape[0]} logit rows for {len(targets)} targets")
    probs = softmax(logits)
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    hit1 = top[:, 0] == np.asarray(targets)
    hitk = (top == np.asarray(targets)[:, None]).any(axis=1)
    per_class: dict[str, dict] = {}
    wrong = []
    for i, label in enumerate(labels):
        c = per_class.setdefault(label, {"class": categories[targets[i]], "images": 0, "top1": 0, "top5": 0})
        c["images"] += 1
        c["top1"] += int(hit1[i])
        c["top5"] += int(hitk[i])
        if not hit1[i]:
            wrong.append({"path": paths[i], "label": label, "in_top5": bool(hitk[i]),
                          "top5": [{"class": categories[j], "prob": float(probs[i, j])} for j in top[i]]})
    n = len(targets)
    predicted = [int(j) for j in top[:, 0]]
    for label, c in per_class.items():
        # Recall: of this label's images, the share labelled it; precision: of the images labelled its class,
        # the share that were this label's (None when the model never chose it).
        target = targets[labels.index(label)]
        chosen = sum(1 for j in predicted if j == target)
        c["top1_rate"], c["top5_rate"] = c["top1"] / c["images"], c["top5"] / c["images"]
        c["recall"], c["predicted"] = c["top1_rate"], chosen
        c["precision"] = c["top1"] / chosen if chosen else None
    return {"images": n, "top1": int(hit1.sum()), "top5": int(hitk.sum()),
            "top1_rate": float(hit1.mean()) if n else None, "top5_rate": float(hitk.mean()) if n else None,
            "per_class": per_class, "wrong": wrong, "confusion": confusion(targets, predicted, categories)}


def confusion(targets: list[int], predicted: list[int], categories: list[str]) -> dict:
    """Counts of (true class, top-1 class) over the classes that occur as either, in the model's class order:
    `matrix[i][j]` images of `classes[i]` labelled `classes[j]`."""
    classes = sorted(set(targets) | set(predicted))
    at = {c: i for i, c in enumerate(classes)}
    matrix = [[0] * len(classes) for _ in classes]
    for t, p in zip(targets, predicted, strict=True):
        matrix[at[t]][at[p]] += 1
    return {"classes": [categories[c] for c in classes], "matrix": matrix}
