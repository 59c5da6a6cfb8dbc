"""report.md for `bench` and `eval`: the tables a person reads; report.json holds every figure."""

from __future__ import annotations

from pathlib import Path

from stream.lab.environment import one_line


def _relative(path: str, root: str) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return path


def _n(value, fmt: str = ".1f") -> str:
    return "–" if value is None else format(value, fmt)


def _ms(d: dict | None, fmt: str = ".2f") -> str:
    """mean ± std of a {'mean','std','n'} figure."""
    if not d or d.get("mean") is None:
        return "–"
    return f"{d['mean']:{fmt}} ± {d['std']:{fmt}}" if d["n"] > 1 else format(d["mean"], fmt)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(r) + " |" for r in rows), ""]


def _key(r: dict) -> list[str]:
    return [r["model"], r["backend"], r["precision"], str(r["batch"])]


def _header(report: dict, title: str) -> list[str]:
    lines = [f"# {title}", "", f"Measured {report['created']} on {one_line(report['environment'])}.", "",
             f"Command: `{report['command']}`", ""]
    if report.get("status") not in ("completed", "running"):
        lines += [f"**Run {report.get('status')}**: the rows below are what was measured before the stop.", ""]
    lines += [f"Warning: {w}" for w in report.get("warnings", [])] + ([""] if report.get("warnings") else [])
    random = sorted({r["model"] for r in report["rows"] if r.get("random_weights")})
    if random:
        lines += [f"> **Random weights** for {', '.join(random)}: speed and memory are real, but labels are "
                  "meaningless and near-uniform outputs make top-1/top-5 agreement weak evidence; read the "
                  "logit differences instead.", ""]
    return lines


def _failed(report: dict) -> list[str]:
    rows = [r for r in report["rows"] if r["status"] != "ok"]
    if not rows:
        return []
    return ["## Failed or not measured", "", *_table(
        ["model", "backend", "precision", "batch", "status", "reason"],
        [[*_key(r), r["status"], r["reason"] or "the run stopped before it"] for r in rows])]


def bench_markdown(report: dict) -> str:
    s = report["settings"]
    ok = [r for r in report["rows"] if r["status"] == "ok"]
    lines = _header(report, "Benchmark: load time, per-image latency, memory, numeric change, real-time")
    lines += [f"Each combination ran in fresh processes: one first start (export/engine build into an empty "
              f"cache), then {s['starts'] - 1} warm start(s), each timing {s['repeats']} batches of real frames "
              f"after {s['warmup']} warm-up batches (excluded). Latency per image = batch time / batch. "
              f"Inputs: {s['frames']} frames of `{s['inputs']}`.", ""]
    torch_tp = {(r["model"], r["batch"]): r["latency"]["throughput"] for r in ok
                if r["backend"] == "torch" and r["precision"] == "fp32"}

    def speedup(r):
        base = torch_tp.get((r["model"], r["batch"]))
        return "–" if base is None else f"{r['latency']['throughput'] / base:.2f}×"

    lines += ["## Speed (model only, warm)", "", *_table(
        ["model", "backend", "precision", "batch", "mean ± std ms/img", "p50", "p95", "p99", "img/s",
         "× torch fp32"],
        [[*_key(r), f"{r['latency']['mean_ms']:.2f} ± {r['latency']['std_ms']:.2f}", _n(r["latency"]["p50_ms"], ".2f"),
          _n(r["latency"]["p95_ms"], ".2f"), _n(r["latency"]["p99_ms"], ".2f"), _n(r["latency"]["throughput"]),
          speedup(r)] for r in ok])]
    lines += ["## Start-up and load (seconds)", "",
              "First start: export/engine build into the bench's cache. Warm start: the cached artifact "
              "(or, for PyTorch, the weights file) loaded again; mean ± std over the warm starts. "
              "Ready = process start to the first timed batch (imports, load, warm-up). "
              "Pays back after = frames until the build's time is saved against PyTorch fp32 at the same batch.",
              "", *_table(
                  ["model", "backend", "precision", "batch", "import", "build (first start)", "first start ready",
                   "warm load", "warm-up", "warm ready", "pays back after"],
                  [[*_key(r), _ms(r["warm_start"]["import_s"]),
                    f"{_n(r['first_start']['build_s'], '.2f')} ({r['first_start']['cache']})",
                    _n(r["first_start"]["ready_s"], ".2f"), _ms(r["warm_start"]["weights_s"]),
                    _ms(r["warm_start"]["warmup_s"]), _ms(r["warm_start"]["ready_s"]), _payback(r)] for r in ok])]
    lines += ["## Memory (MB)", "", *_table(
        ["model", "backend", "precision", "batch", "peak RSS, warm start", "RSS after load", "peak RSS, first start",
         "CUDA peak allocated / reserved"],
        [[*_key(r), _ms(r["memory"]["peak_rss_mb"], ".0f"), _ms(r["memory"]["rss_after_load_mb"], ".0f"),
          _n(r["memory"]["first_start_peak_rss_mb"], ".0f"),
          f"{_n(r['memory']['cuda_allocated_peak_mb'], '.0f')} / {_n(r['memory']['cuda_reserved_peak_mb'], '.0f')}"]
         for r in ok])]
    onnx_models = s.get("onnx_models") or []
    lines += ["## Numeric change against PyTorch fp32 (same real frames)", ""]
    if onnx_models:
        lines += [f"ONNX models ({', '.join(onnx_models)}) are compared with ONNX Runtime fp32 on their own file: "
                  "PyTorch cannot run them.", ""]
    lines += [*_table(
        ["model", "backend", "precision", "batch", "max \\|Δlogit\\|", "mean \\|Δlogit\\|", "logit scale",
         "max \\|Δprob\\|", "cosine (min)", "top-1 agreement", "top-1, clear calls", "top-5 overlap"],
        [[*_key(r), *_fidelity_cells(r.get("fidelity"), r)] for r in ok])]
    lines += [f"## Real time at {s['target_fps']:g} fps", "",
              f"Sustained fps comes from a whole-pipeline run ({s['pipeline_frames']} frames: decode, preprocess, "
              "model, render" + (", encode" if s["pipeline_video"] else "") + ") where one was made, otherwise "
              "from the model and preprocessing alone. The rule is the run's own: at least 0.95 × the target "
              "fps and at most 5 % dropped. A lossless run has no live latency to judge; the estimate is what a "
              "live frame would wait, (batch − 1) frame periods for its batch to fill plus the batch's p95, "
              "against the default budget of 2 frame periods plus that p95.", "", *_table(
                  ["model", "backend", "precision", "batch", "sustained fps", "p95 batch ms",
                   "live latency estimate / budget ms", "verdict", "why"],
                  [[*_key(r), f"{r['realtime']['sustained_fps']:.1f} ({r['realtime']['measured']})",
                    f"{r['realtime']['batch_p95_ms']:.0f}",
                    f"{_n(r['realtime']['live_estimate_ms'], '.0f')} / {_n(r['realtime']['budget_ms'], '.0f')}",
                    f"**{r['realtime']['verdict']}**", r["realtime"]["reason"]] for r in ok])]
    lines += cpu_markdown(report)
    lines += _failed(report)
    lines += [f"![{c}]({c})" for c in report.get("charts", [])] + [""]
    return "\n".join(lines)


def _payback(r: dict) -> str:
    p = r.get("payback")
    if r["backend"] == "torch":
        return "(baseline)"
    if not p:
        return "no torch row"
    if p["build_s"] is None:
        return "no build"
    return "never (not faster)" if p["frames"] is None else f"{p['frames']} frames"


def _fidelity_cells(f: dict | None, r: dict) -> list[str]:
    if f is None:
        return ["no reference"] + ["–"] * 7
    if f.get("reference"):
        return ["reference"] + ["–"] * 7
    if "error" in f:
        return [f["error"]] + ["–"] * 7
    weak = " (weak: random)" if f["weak_agreement"] else ""
    return [f"{f['max_abs_logit_diff']:.2e}", f"{f['mean_abs_logit_diff']:.2e}", f"{f['logit_scale']:.3g}",
            f"{f['max_abs_prob_diff']:.2e}", f"{f['min_cosine']:.6f}", f"{f['top1_agreement']:.0%}{weak}",
            _clear(f), f"{f['top5_overlap']:.0%}{weak}"]


def _clear(f: dict) -> str:
    """Agreement where the reference leads its runner-up by ≥ 0.1 (older reports lack it)."""
    if f.get("top1_agreement_clear") is None:
        return "no clear calls" if "clear_frames" in f else "–"
    return f"{f['top1_agreement_clear']:.0%} of {f['clear_frames']}"


def _rate(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def eval_markdown(report: dict, wrong_per_row: int = 15) -> str:
    d = report["data"]
    ok = [r for r in report["rows"] if r["status"] == "ok"]
    lines = _header(report, f"Evaluation: top-1/top-5 accuracy on `{d['source']}`")
    lines += [f"{d['images']} labelled images in {len(d['labels'])} classes. Each model/backend ran in its own "
              "process; latency is model time per image (mean ± std, p95) over at least 30 timed batches that repeat "
              "the set's own batch shapes, after every shape was warmed up (as bench times it). Peak RSS includes "
              "the ONNX export when the cache was cold (cache: miss)."]
    if d["ignored"]:
        lines += [f"Ignored: {len(d['ignored'])} file(s), e.g. {d['ignored'][0]}."]
    lines += [""]
    lines += ["## Accuracy", "", *_table(
        ["model", "weights", "backend", "precision", "top-1", "top-5", "images scored", "ms/img mean ± std (p95)",
         "timed batches", "peak RSS MB",
         "cache"],
        [[r["model"], r["weights_desc"] + (" (RANDOM)" if r["random_weights"] else ""), r["backend"], r["precision"],
          f"{r['accuracy']['top1']}/{r['accuracy']['images']} ({r['accuracy']['top1_rate']:.1%})",
          f"{r['accuracy']['top5']}/{r['accuracy']['images']} ({r['accuracy']['top5_rate']:.1%})",
          str(r["accuracy"]["images"]),
          f"{r['latency']['mean_ms']:.2f} ± {r['latency']['std_ms']:.2f} ({r['latency']['p95_ms']:.2f})",
          str(r["latency"]["batches"]), _n(r["peak_rss_mb"], ".0f"),
          r["load"]["cache"]]
         for r in ok])]
    not_scored = {}
    for r in ok:
        for label, count in r["unknown_labels"].items():
            not_scored[label] = f"matches no class of the model ({count} images)"
        for label, count in r["ambiguous_labels"].items():
            not_scored[label] = f"names several classes; use its WordNet id ({count} images)"
    if not_scored:
        rows = [list(kv) for kv in sorted(not_scored.items())]
        lines += ["## Labels not scored", "", *_table(["label", "why"], rows)]
    if ok:
        names = [f"{r['model']} {r['backend']} {r['precision']}" for r in ok]
        classes = sorted({c for r in ok for c in r["accuracy"]["per_class"]})
        cells = []
        for c in classes:
            per = [r["accuracy"]["per_class"].get(c) for r in ok]
            n = next(p["images"] for p in per if p)
            cells.append([c, str(n), *("–" if p is None else f"{p['top1']} / {p['top5']}" for p in per)])
        lines += ["## Per class (top-1 / top-5 correct)", "", *_table(["label", "images", *names], cells)]
        cells = []
        for c in classes:
            per = [r["accuracy"]["per_class"].get(c) for r in ok]
            cells.append([c, *("–" if p is None or "recall" not in p else
                               f"{_rate(p.get('precision'))} / {_rate(p['recall'])}" for p in per)])
        lines += ["## Per class: precision / recall at top-1", "",
                  "Precision: of the images the model labelled this class, the share that were; recall: of this "
                  "label's images, the share labelled it (– : never chosen). Confusion matrices: the "
                  "confusion-N.png charts below, N the row's place in report.json.", "",
                  *_table(["label", *names], cells)]
    root = d["source"] if Path(d["source"]).is_dir() else str(Path(d["source"]).parent)
    for r in ok:
        wrong = r["accuracy"]["wrong"]
        if not wrong or r["random_weights"]:  # every image of a random model is "wrong": no information
            continue
        lines += [f"### Wrong at top-1: {r['model']} on {r['backend']} {r['precision']} ({len(wrong)})", "", *_table(
            ["image", "label", "in top-5", "top-5 (probability)"],
            [[_relative(w["path"], root), w["label"], "yes" if w["in_top5"] else "no",
              ", ".join(f"{t['class']} ({t['prob']:.2f})" for t in w["top5"])] for w in wrong[:wrong_per_row]])]
        if len(wrong) > wrong_per_row:
            lines += [f"… and {len(wrong) - wrong_per_row} more in report.json.", ""]
    lines += _failed(report)
    lines += [f"![{c}]({c})" for c in report.get("charts", [])] + [""]
    return "\n".join(lines)


CPU_COLUMNS = (("decode", ("decode",)), ("preprocess", ("preprocess",)),
               ("inference", ("inference", "inference_pool")), ("postprocess", ("postprocess",)),
               ("decisions", ("decisions",)), ("render", ("render",)), ("encode", ("encode",)),
               ("other sinks", ("sinks",)),
               ("overhead", ("capture", "batching", "session", "unattributed")),
               ("other threads", ("web", "event_outputs", "other_threads")))


def cpu_markdown(report: dict) -> list[str]:
    """CPU per frame of each pipeline run, by stage (the run report's `cpu` section); [] when there is none."""
    rows = [r for r in report["rows"]
            if r["status"] == "ok" and ((r.get("pipeline") or {}).get("cpu") or {}).get("frames")]
    if not rows:
        return []

    def cells(cpu: dict) -> list[str]:
        st = cpu["stages"]
        return [f"{sum(st.get(k, {}).get('ms_per_frame') or 0.0 for k in keys):.2f}" for _, keys in CPU_COLUMNS]

    return ["## CPU per frame in the pipeline run (ms of CPU, all threads)", "",
            "Each stage's CPU time divided by the frames shown: the stage threads' own clocks, the runtime's "
            "threads counted with inference, decoder and encoder helpers with their stage. Overhead is the "
            "pipeline's own (capture and batch threads outside their stages, the render loop's rest, unattributed).",
            "", *_table(["model", "backend", "precision", "batch", "total", *(c for c, _ in CPU_COLUMNS),
                         "overhead share", "cores busy"],
                        [[*_key(r), f"{r['pipeline']['cpu']['process_ms_per_frame']:.2f}",
                          *cells(r["pipeline"]["cpu"]), f"{r['pipeline']['cpu']['overhead']['share']:.0%}",
                          f"{r['pipeline']['cpu']['cores_busy']:.2f}"] for r in rows])]
