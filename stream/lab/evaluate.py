"""`run_stream.py eval`: top-1/top-5 accuracy of each model/backend on a labelled image set.

Each (model, backend) runs in its own worker process, which decodes the images, runs them in
batches and saves their logits; labels are matched to the model's classes here, so that unknown
or ambiguous labels are reported per model rather than dropped.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from stream.backends import runs
from stream.backends.settings import BackendSettings
from stream.lab.accuracy import score
from stream.lab.dataset import WNID, LabelledSet, imagenet_wnids, resolve
from stream.lab.metrics import Latency
from stream.lab.progress import JobProgress
from stream.lab.runner import job_cache, run_job, slug
from stream.lab.worker import Job


@dataclass(frozen=True)
class EvalSettings:
    models: list[tuple[str, str]]  # (name, weights)
    backends: list[str]
    data: LabelledSet
    out: Path
    precisions: tuple[str, ...] = ("auto",)
    batch: int = 8
    warmup: int = 2
    backend: BackendSettings = BackendSettings()  # its precision is each row's
    timeout: float = 1800.0
    skip: frozenset = frozenset()  # (model, backend) pairs that cannot run (an ONNX model on torch)


def run_eval(s: EvalSettings, write) -> dict:
    work = s.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    paths = [i.path for i in s.data.images]
    plan = [(m, w, b, p) for m, w in s.models for b in s.backends for p in s.precisions
            if runs(b, p) and (m, b) not in s.skip]
    rows = [{"model": m, "weights": w, "backend": b, "precision": p, "batch": s.batch,
             "status": "pending", "reason": None} for m, w, b, p in plan]
    progress = JobProgress(len(plan))
    with job_cache(s.backend.cache_dir, s.out) as cache:
        try:
            for row in rows:
                name = f"{slug(row['model'])}-{row['backend']}-{row['precision']}"
                job = Job(**{**asdict(s.backend), "precision": row["precision"], "cache_dir": cache},
                          kind="eval", model=row["model"], weights=row["weights"], backend=row["backend"],
                          batch=s.batch, warmup=s.warmup, images=paths, logits_path=str(work / f"{name}.logits.npy"))
                result = run_job(job, work, name, s.timeout)
                row.update(score_result(s.data, result))
                progress.advance(name, result)
                write(rows)
        finally:
            progress.close()
    return rows


def labels_of_read(data: LabelledSet, read: list[str]) -> list[str]:
    """Labels of the images the worker could decode, in its order (it keeps the set's order)."""
    labels, j = [], 0
    for image in data.images:
        if j < len(read) and image.path == read[j]:
            labels.append(image.label)
            j += 1
    return labels


def score_result(data: LabelledSet, result: dict) -> dict:
    if result["status"] != "ok":
        return {"status": "failed", "reason": result["reason"]}
    categories = result["model"]["categories"]
    read = result["images_read"]
    labels = labels_of_read(data, read)
    wnids = imagenet_wnids(len(categories)) if any(WNID.match(label) for label in labels) else None
    res = resolve(set(labels), categories, wnids)
    counts = Counter(labels)
    known = [i for i, label in enumerate(labels) if label in res.index]
    if not known:
        return {"status": "failed", "reason": f"no label matched a class of the model (e.g. {labels[0]!r}; its "
                                              f"classes: {', '.join(categories[:6])}, ...); name the folders as the "
                                              "model's labels (ImageNet's: category names or WordNet ids)"}
    logits = np.load(result["logits_path"])
    accuracy = score(logits[known], [res.index[labels[i]] for i in known], [labels[i] for i in known],
                     [read[i] for i in known], categories)
    return {
        "status": "ok", "weights_desc": result["model"]["weights"], "random_weights": result["model"]["random_weights"],
        "precision": result["backend"]["precision"], "device": result["backend"]["device"],
        "accuracy": accuracy,
        # Per-image model time over ≥ 30 timed batches, with its spread (stream.lab.worker._eval_pass).
        "latency": Latency.of(result["batch_s"], result["batch_sizes"]).as_dict(),
        "preprocess_ms_per_image": result["preprocess_ms_per_image"],
        "load": result["load"], "import_s": result["import_s"], "peak_rss_mb": result["memory"]["peak_rss_mb"],
        "device_peak_mb": result["memory"].get("device_peak_mb"),
        "unknown_labels": {u: counts[u] for u in res.unknown},
        "ambiguous_labels": {a: counts[a] for a in res.ambiguous},
        "unreadable_images": result["skipped"], "worker": result["pid"],
    }


def data_summary(data: LabelledSet) -> dict:
    return {"source": data.source, "images": len(data.images),
            "labels": dict(Counter(i.label for i in data.images)), "ignored": data.ignored}
