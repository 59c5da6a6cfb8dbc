"""`/api/status`: the dashboard's snapshot as JSON, a pure function of it (the page draws from this)."""

from __future__ import annotations

import math

from stream.observe.stats import Percentiles, SnapshotRow, StatsSnapshot


def _num(value: float | None, digits: int = 2) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, digits)


def _latency(p: Percentiles) -> dict:
    return {"p50": _num(p.p50), "p95": _num(p.p95), "p99": _num(p.p99), "count": p.count}


def _frames(snap: StatsSnapshot) -> dict:
    return {"read": snap.frames_read, "processed": snap.frames_processed, "shown": snap.frames_rendered,
            "dropped": snap.frames_dropped, "total": snap.total_frames}


def _top(snap: StatsSnapshot) -> list[dict]:
    return [{"label": t.label, "prob": _num(t.prob, 4)} for t in snap.top]


def stream_status(row: SnapshotRow) -> dict:
    """One stream's row of the snapshot (the page's tile, an entry of /api/streams)."""
    return {
        "name": row.name,
        "state": row.state,
        "fps": _num(row.snap.fps_10s.pipeline),
        "latency_ms": {"end_to_end": _latency(row.snap.latency_ms["end_to_end"])},
        "frames": _frames(row.snap),
        "drops": dict(row.drops),
        "reconnects": row.reconnects,
        "stalls": row.stalls,
        "last_frame_age_s": _num(row.last_frame_age_s),
        "top": _top(row.snap),
    }


def no_row(name: str, state: str = "starting") -> dict:
    """A stream the snapshot has no row for yet (it has just joined, or the model is loading): same keys."""
    return {"name": name, "state": state, "fps": None, "latency_ms": {"end_to_end": None}, "frames": None,
            "drops": {}, "reconnects": 0, "stalls": 0, "last_frame_age_s": None, "top": []}


def status_document(snap: StatsSnapshot | None, names: list[str]) -> dict:
    """Before the first snapshot (the model still loading) every stream is `starting`."""
    if snap is None:
        return {"state": "starting", "streams": [{"name": n, "state": "starting"} for n in names]}
    verdict = snap.verdict
    return {
        "state": "running",
        "elapsed_s": _num(snap.elapsed_s),
        "frames": _frames(snap),
        "fps": {"pipeline_1s": _num(snap.fps_1s.pipeline), "pipeline_10s": _num(snap.fps_10s.pipeline),
                "pipeline_run": _num(snap.fps_total.pipeline), "capture_10s": _num(snap.fps_10s.capture),
                "model_only": _num(snap.model_fps)},
        "latency_ms": {stage: _latency(p) for stage, p in snap.latency_ms.items()},
        "memory_mb": {"rss": _num(snap.rss_mb, 1), "peak_rss": _num(snap.peak_rss_mb, 1),
                      "device_peak": _num(snap.device_mb, 1)},
        "eta_s": _num(snap.eta_s, 1),
        "verdict": None if verdict is None else {"verdict": verdict.verdict, "reason": verdict.reason},
        "streams": [stream_status(row) for row in snap.streams],
    }
