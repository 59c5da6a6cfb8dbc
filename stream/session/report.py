"""The run report: a JSON document with every figure, and a short summary for the terminal."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from stream.backends import LoadRecord
from stream.media.sources import SourceInfo
from stream.observe.histogram import METHOD
from stream.observe.realtime import Measured, Verdict, combine, judge
from stream.observe.runinfo import RunInfo
from stream.observe.stats import STAGES, StatsCollector, peak_rss_mb
from stream.session.records import written_frames


@dataclass(frozen=True)
class LoadTimes:
    backend: LoadRecord  # weights or cached artifact load, build/export, cache status
    warmup_s: float
    startup_s: float  # process start → pipeline start (imports, source, model, warm-up)


def json_safe(value):
    """NaN/inf are not JSON: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):  # settings records (a Calibration)
        return json_safe(dataclasses.asdict(value))
    return value


def _figures(stats: StatsCollector, stale_at_start: int, written: int | None) -> dict:
    """Frames, rates, latencies and the real-time verdict of one collector (a stream, or the whole run)."""
    snap = stats.snapshot(stats.last_rendered_at)
    latency = stats.latencies()
    seen = snap.frames_read
    run_s = (stats.last_rendered_at or 0.0) - (stats.started_at or 0.0)
    verdict = judge(stats.target, Measured(
        fps=snap.fps_total.pipeline, drop_ratio=snap.frames_dropped / seen if seen else 0.0,
        model_p95_ms=latency["inference"].p95, e2e_p95_ms=latency["end_to_end"].p95, model_fps=snap.model_fps,
        frames=snap.frames_rendered, seconds=run_s))
    return {
        "frames": {"read": snap.frames_read, "processed": snap.frames_processed,
                   "dropped": snap.frames_dropped, "written": written, "shown": snap.frames_rendered,
                   "stale_at_start": stale_at_start},
        "fps": {"capture": snap.fps_total.capture, "inference": snap.fps_total.inference,
                "pipeline": snap.fps_total.pipeline, "model_only": snap.model_fps},
        "latency_ms": {stage: latency[stage].as_dict() for stage in STAGES},
        "realtime": verdict.as_dict(),
    }


def _source(source: SourceInfo, policy: str) -> dict:
    return {"uri": source.uri, "kind": source.kind, "fps": source.fps, "frames": source.frame_count,
            "width": source.width, "height": source.height, "live": source.live, "drop_policy": policy}


def build_report(info: RunInfo, outcome, load: LoadTimes, process_start: float,
                 device_peak_mb: float | None) -> dict:
    """Totals at the top level; with several streams, each stream's own figures under `streams`.

    `outcome` is a stream.session.records.RunOutcome (either engine's): its streams carry their slot (name,
    source, plan), their collector and their sinks' summaries."""
    first = outcome.stats.first_rendered_at
    streams, known = [], []
    for o in outcome.streams:
        w = written_frames(o.sinks)
        if w is not None:
            known.append(w)
        streams.append({"name": o.name, "state": o.state, "reconnects": o.reconnects, "stalls": o.stalls,
                        "backlog_skipped_on_reconnect": o.backlog_skipped,
                        "drops": o.drops, "end_reason": o.end_reason,
                        "health": None if o.health is None else dataclasses.asdict(o.health),
                        "error": None if o.error is None else f"{type(o.error).__name__}: {o.error}",
                        "source": _source(o.slot.info, o.slot.plan.policy),
                        **_figures(o.stats, o.stale_discarded, w)})
    retired = outcome.retired
    if retired.written is not None:
        known.append(retired.written)
    totals = _figures(outcome.stats, outcome.stale_discarded, sum(known) if known else None)
    report = {
        "status": outcome.status,
        "end_reason": outcome.end_reason,
        "source": (streams[0]["source"] if len(streams) == 1 else
                   {"kind": "streams", "count": len(streams), "uris": [s["source"]["uri"] for s in streams],
                    "live": any(s["source"]["live"] for s in streams)}),
        "engine": info.engine,
        "model": {"name": info.model, "weights": info.weights, "random_weights": info.random_weights,
                  "backend": info.backend, "device": info.device, "precision": info.precision,
                  "batch": info.batch, "threads": info.threads, "calls": info.calls, "resize": info.resize,
                  "interpolation": info.interpolation},
        "load": {"weights_s": load.backend.weights_s, "build_s": load.backend.build_s, "warmup_s": load.warmup_s,
                 "startup_s": load.startup_s, "first_frame_s": None if first is None else first - process_start,
                 "cache": load.backend.cache, "artifact": load.backend.artifact},
        **totals,
        "memory": {"peak_rss_mb": peak_rss_mb(), "device_peak_mb": device_peak_mb},
        "cpu": None if (cpu := outcome.stats.cpu_snapshot()) is None else cpu.as_dict(),
        "latency_method": METHOD,
        "warnings": outcome.warnings,
    }
    if len(streams) > 1 or retired.count:
        report["realtime"] = combine([(s["name"], Verdict(**s["realtime"])) for s in streams]).as_dict()
        report["streams"] = streams
    if retired.count:  # a long service's oldest removed streams, summed (stream.session.session.REMOVED_LISTED)
        report["streams_not_listed"] = retired.as_dict()
    return json_safe(report)


def write_report(report: dict, path: str) -> None:
    from stream.outputs.staged import write_json
    from stream.redact import scrub_tree

    write_json(scrub_tree(report), path)


def summary(report: dict) -> str:
    def ms(stage: str) -> str:
        p = report["latency_ms"][stage]
        return "--" if p["p50"] is None else f"p50 {p['p50']:.1f} / p95 {p['p95']:.1f} ms"

    def num(value, fmt: str = ".2f") -> str:
        return "--" if value is None else format(value, fmt)

    m, f, fps, load, mem = report["model"], report["frames"], report["fps"], report["load"], report["memory"]
    rt = report["realtime"]
    lines = [
        f"run {report['status']} ({report['end_reason']})",
        f"model   {m['name']} [{m['weights']}] on {m['backend']}/{m['device']} {m['precision']}, batch {m['batch']}",
        f"frames  read {f['read']}, processed {f['processed']}, dropped {f['dropped']}, "
        f"written {num(f['written'], 'd')}"
        + (f", {f['stale_at_start']} stale frames skipped at start" if f["stale_at_start"] else ""),
        f"fps     pipeline {num(fps['pipeline'], '.1f')}, capture {num(fps['capture'], '.1f')}, "
        f"inference {num(fps['inference'], '.1f')}, model only {num(fps['model_only'], '.1f')}",
        f"latency end-to-end {ms('end_to_end')}; inference {ms('inference')}; preprocess {ms('preprocess')}",
        f"load    weights {num(load['weights_s'])} s"
        + (f", build {num(load['build_s'])} s" if load["build_s"] is not None else "")
        + (f" (cache {load['cache']})" if load["cache"] != "not used" else "")
        + f", warm-up {num(load['warmup_s'])} s (excluded from the figures), "
        f"first annotated frame after {num(load['first_frame_s'])} s",
        f"memory  peak RSS {mem['peak_rss_mb']:.0f} MB"
        + ("" if mem["device_peak_mb"] is None else f", device peak {mem['device_peak_mb']:.0f} MB"),
        f"verdict {rt['verdict'].upper()} at {rt['target_fps']:.1f} fps: {rt['reason']}",
    ]
    if report.get("cpu") and report["cpu"]["frames"]:
        lines.append(cpu_line(report["cpu"]))
    if m["random_weights"]:
        lines.append("note    RANDOM WEIGHTS: labels are meaningless; speed figures are still valid")
    lines += [f"warning {w}" for w in report["warnings"]]
    return "\n".join(lines)


def cpu_line(cpu: dict) -> str:
    """The CPU per frame in one line: the total, the largest stages, the pipeline's own overhead."""
    stages = sorted(((v["ms_per_frame"], k) for k, v in cpu["stages"].items() if k != "unattributed"
                     and v["ms_per_frame"] is not None), reverse=True)
    big = ", ".join(f"{name} {ms:.1f}" for ms, name in stages[:4] if ms >= 0.05)
    return (f"cpu     {cpu['process_ms_per_frame']:.1f} ms per frame ({cpu['cores_busy']:.2f} cores busy): {big}; "
            f"overhead {cpu['overhead']['share']:.0%} (--report's cpu section has every stage)")
