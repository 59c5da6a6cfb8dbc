"""`run_stream.py bench`: every (model, backend, precision, batch) measured in fresh processes.

Jobs run in rounds so that the shared machine's drift hits every combination alike: first starts
(export/engine build into the bench's cache), then `starts - 1` warm starts (cached load, timed
batches, logits of the real frames), then one whole-pipeline run each. The report is rewritten
after every job, so an interrupted bench still leaves what it measured.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from stream.backends import runs
from stream.backends.settings import BackendSettings, flags
from stream.lab.metrics import Latency, fidelity, mean_std, payback_frames
from stream.lab.progress import JobProgress
from stream.lab.runner import job_cache, run_job, run_pipeline, slug
from stream.lab.worker import Job
from stream.observe.realtime import Measured, Target, judge


@dataclass(frozen=True)
class Combo:
    model: str
    weights: str
    backend: str
    precision: str  # as requested; the worker reports what it resolved to
    batch: int

    @property
    def id(self) -> str:
        return f"{slug(self.model)}-{self.backend}-{self.precision}-b{self.batch}"  # a file name too


@dataclass(frozen=True)
class BenchSettings:
    combos: list[Combo]
    out: Path
    inputs: str
    frames: int = 32
    warmup: int = 5
    repeats: int = 30
    starts: int = 3
    target_fps: float = 30.0
    pipeline_frames: int = 150
    pipeline_video: bool = False
    backend: BackendSettings = BackendSettings()  # its precision is each combo's; cache_dir None: a fresh cache
    timeout: float = 1800.0                       # inside `out`, deleted at the end
    onnx_models: frozenset = frozenset()  # models that are ONNX files: compared with ONNX Runtime fp32, not PyTorch


def _job(s: BenchSettings, c: Combo, cache: str, **kw) -> Job:
    fields = dict(kind="bench", model=c.model, weights=c.weights, backend=c.backend, precision=c.precision,
                  batch=c.batch, cache_dir=cache, warmup=s.warmup, repeats=s.repeats, inputs=s.inputs, frames=s.frames)
    return Job(**{**asdict(s.backend), **fields, **kw})


def _pipeline_args(s: BenchSettings, c: Combo, cache: str, work: Path) -> list[str]:
    args = ["--source", s.inputs, "--model", c.model, "--weights", c.weights, "--backend", c.backend,
            "--batch", str(c.batch), "--loop", "--max-frames", str(s.pipeline_frames), "--target-fps",
            str(s.target_fps), "--drop-policy", "block", "--warmup", str(s.warmup),
            *flags(replace(s.backend, precision=c.precision, cache_dir=cache))]
    if s.pipeline_video:
        args += ["--output", str(work / f"{c.id}.mp4")]
    return args


def run_bench(s: BenchSettings, write) -> dict:
    """Run every job, calling `write(report)` after each; the final report."""
    work = s.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {c.id: {"first": None, "warm": [], "pipeline": None} for c in s.combos}
    references: dict[tuple[str, str], dict] = {}
    total = len(s.combos) * s.starts + (len(s.combos) if s.pipeline_frames else 0)
    progress = JobProgress(total)

    def ok(c: Combo) -> bool:
        return (results[c.id]["first"] or {}).get("status") == "ok"

    def done(label: str, result: dict) -> None:
        progress.advance(label, result)
        write(assemble(s, results, references))

    with job_cache(s.backend.cache_dir, s.out) as cache:
        try:
            for c in s.combos:
                r = results[c.id]["first"] = run_job(_job(s, c, cache, repeats=0), work, f"{c.id}-start1", s.timeout)
                if not ok(c):  # its warm starts and pipeline run will not happen
                    progress.add(-(s.starts - 1) - (1 if s.pipeline_frames else 0))
                done(f"{c.id} first start", r)
            for start in range(2, s.starts + 1):
                for c in s.combos:
                    if not ok(c):
                        continue
                    logits = str(work / f"{c.id}.logits.npy") if start == 2 else None
                    r = run_job(_job(s, c, cache, logits_path=logits), work, f"{c.id}-start{start}", s.timeout)
                    results[c.id]["warm"].append(r)
                    done(f"{c.id} start {start}", r)
                if start == 2:
                    _reference_jobs(s, results, references, cache, work, progress, done)
            if s.pipeline_frames:
                for c in s.combos:
                    if not ok(c):
                        continue
                    r = run_pipeline(_pipeline_args(s, c, cache, work), work, f"{c.id}-pipeline", s.timeout)
                    results[c.id]["pipeline"] = r
                    done(f"{c.id} pipeline", r)
        finally:
            progress.close()
            for video in work.glob("*.mp4"):
                video.unlink()
    return assemble(s, results, references)


def _reference_jobs(s, results, references, cache, work, progress, done) -> None:
    """The PyTorch fp32 logits each model is compared with (ONNX Runtime's fp32 for a user's ONNX file, which
    PyTorch cannot run): a row's, or a dedicated run."""
    for model, weights in dict.fromkeys((c.model, c.weights) for c in s.combos):
        backend = "onnxruntime" if model in s.onnx_models else "torch"
        candidates = sorted((c for c in s.combos if (c.model, c.weights) == (model, weights) and c.backend == backend
                             and _resolved(results[c.id]) == "fp32" and _logits(results[c.id])),
                            key=lambda c: c.batch)
        if candidates:
            references[(model, weights)] = {"row": candidates[0].id, "logits": _logits(results[candidates[0].id])}
            continue
        ref = Combo(model, weights, backend, "fp32", 1)
        path = str(work / f"{ref.id}.reference.npy")
        progress.add(1)
        r = run_job(_job(s, ref, cache, warmup=1, repeats=0, logits_path=path), work, f"{ref.id}-reference",
                    s.timeout)
        references[(model, weights)] = {"row": f"{ref.id} (reference run)", "logits": path if r["status"] == "ok"
                                        else None, "reason": r.get("reason")}
        done(f"{ref.id} reference", r)


def _resolved(r: dict) -> str | None:
    warm = r["warm"][0] if r["warm"] else r["first"] or {}
    return (warm.get("backend") or {}).get("precision")


def _logits(r: dict) -> str | None:
    for w in r["warm"][:1]:
        path = Path(str(w.get("logits_path") or ""))
        if w.get("status") == "ok" and path.is_file():
            return str(path)
    return None


def _row(s: BenchSettings, c: Combo, r: dict) -> dict:
    first, warms = r["first"], [w for w in r["warm"] if w.get("status") == "ok"]
    row = {"id": c.id, "model": c.model, "weights": c.weights, "backend": c.backend, "precision": c.precision,
           "requested_precision": c.precision, "batch": c.batch, "status": "pending", "reason": None}
    if first is None:
        return row
    failed = first if first["status"] != "ok" else next((w for w in r["warm"] if w["status"] != "ok"), None)
    if failed is not None:
        return {**row, "status": "failed", "reason": failed.get("reason")}
    if not warms:
        return {**row, "status": "pending"}
    info, backend = warms[0]["model"], warms[0]["backend"]
    batch_s = [t for w in warms for t in w["batch_s"]]
    latency = Latency.of(batch_s, c.batch)
    pre_ms = float(np.mean([w["preprocess_ms_per_image"] for w in warms]))
    row.update(
        status="ok", weights_desc=info["weights"], random_weights=info["random_weights"],
        precision=backend["precision"], device=backend["device"], threads=backend["threads"],
        torch_threads=warms[0].get("torch_threads"), workers=[x["pid"] for x in (first, *warms)],
        first_start={"import_s": first["import_s"], **{k: first["load"][k] for k in ("weights_s", "build_s", "cache")},
                     "warmup_s": first["warmup_s"], "ready_s": first["ready_s"], "wall_s": first["wall_s"],
                     "peak_rss_mb": first["memory"]["peak_rss_mb"], "artifact": first["load"]["artifact"]},
        warm_start={"starts": len(warms), "cache": warms[-1]["load"]["cache"],
                    **{k: mean_std([w[k] for w in warms]) for k in ("import_s", "warmup_s", "ready_s", "wall_s")},
                    "weights_s": mean_std([w["load"]["weights_s"] for w in warms])},
        latency=latency.as_dict(),
        throughput_per_start=mean_std([len(w["batch_s"]) * c.batch / sum(w["batch_s"]) for w in warms]),
        preprocess_ms_per_image=pre_ms,
        memory={"peak_rss_mb": mean_std([w["memory"]["peak_rss_mb"] for w in warms]),
                "rss_after_load_mb": mean_std([w["rss_after_load_mb"] for w in warms]),
                "first_start_peak_rss_mb": first["memory"]["peak_rss_mb"],
                **{k: max((w["memory"].get(k) or 0.0) for w in warms) or None
                   for k in ("device_peak_mb", "cuda_allocated_peak_mb", "cuda_reserved_peak_mb")}},
    )
    pipe = r["pipeline"]
    if pipe is not None:
        row["pipeline"] = ({"status": "ok", "fps": pipe["fps"]["pipeline"], "frames": pipe["frames"]["shown"],
                            "first_frame_s": pipe["load"]["first_frame_s"],
                            "e2e_p95_ms": pipe["latency_ms"]["end_to_end"]["p95"],
                            "verdict": pipe["realtime"]["verdict"], "reason": pipe["realtime"]["reason"],
                            "cpu": pipe.get("cpu")}
                           if pipe["status"] == "ok" else {"status": "failed", "reason": pipe["reason"]})
    sustained, measured = 1000.0 / (latency.mean_ms + pre_ms), "model"
    if (row.get("pipeline") or {}).get("status") == "ok":
        sustained, measured = row["pipeline"]["fps"], "pipeline"
    # The run's own rule (stream.observe.realtime): a lossless pipeline run judges throughput; the live latency is
    # estimated from the batch's p95 (model and preprocessing) and shown against the default budget.
    batch_p95_ms = latency.batch_p95_ms + pre_ms * c.batch
    verdict = judge(Target(s.target_fps, judge_latency=False, batch=c.batch),
                    Measured(fps=sustained, drop_ratio=0.0, model_p95_ms=batch_p95_ms, e2e_p95_ms=None,
                             model_fps=1000.0 / latency.mean_ms))
    row["realtime"] = {**verdict.as_dict(), "measured": measured, "sustained_fps": sustained,
                       "batch_p95_ms": batch_p95_ms}
    return row


def assemble(s: BenchSettings, results: dict, references: dict) -> dict:
    rows = {c.id: _row(s, c, results[c.id]) for c in s.combos}
    built = {f["load"]["artifact"]: f["load"]["build_s"] for f in (results[c.id]["first"] for c in s.combos)
             if f and f.get("status") == "ok" and f["load"].get("build_s") is not None}
    for c in s.combos:
        row = rows[c.id]
        if row["status"] != "ok":
            continue
        ref = references.get((c.model, c.weights))
        row["fidelity"] = _fidelity(row, results[c.id], ref)
        # A cache hit inside this bench reuses an artifact another row built: that build is its cost too.
        build_s = row["first_start"]["build_s"] or built.get(row["first_start"]["artifact"])
        base = _baseline(rows, c)
        row["payback"] = None if c.backend == "torch" or base is None else {
            "against": base["id"], "build_s": build_s,
            "frames": payback_frames(build_s, base["latency"]["mean_ms"], row["latency"]["mean_ms"])}
    return {"rows": list(rows.values()),
            "references": {f"{m} ({w})": {k: v for k, v in ref.items() if k != "logits"}
                           for (m, w), ref in references.items()}}


def _baseline(rows: dict, c: Combo) -> dict | None:
    """The PyTorch fp32 row of the same model and batch, if one was measured."""
    for row in rows.values():
        if ((row["model"], row["weights"], row["backend"], row["batch"]) == (c.model, c.weights, "torch", c.batch)
                and row["status"] == "ok" and row["precision"] == "fp32"):
            return row
    return None


def _fidelity(row: dict, r: dict, ref: dict | None) -> dict | None:
    if ref is None:
        return None
    if ref["row"] == row["id"]:
        return {"reference": True}
    mine = _logits(r)
    if not ref.get("logits") or not mine:
        return {"error": ref.get("reason") or "no logits to compare"}
    a, b = np.load(ref["logits"]), np.load(mine)
    if a.shape != b.shape:
        return {"error": f"logit shapes differ: {a.shape} vs {b.shape}"}
    return {"against": ref["row"], **fidelity(a, b, row["random_weights"])}


def combos(models: list[tuple[str, str]], backends: list[str], precisions: list[str],
           batches: list[int], skip: frozenset = frozenset()) -> list[Combo]:
    """Torch first within each model, so its logits are the reference before the others are compared;
    combinations a backend does not offer at all (int8 on torch, an ONNX model on torch: `skip`) are left out."""
    order = sorted(backends, key=lambda b: b != "torch")
    return [Combo(m, w, b, p, n) for m, w in models for b in order for p in precisions for n in batches
            if runs(b, p) and (m, b) not in skip]

