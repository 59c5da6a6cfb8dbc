"""The one rule for "real-time", used by a run's verdict, the live dashboard and `bench`.

Real-time means: throughput at least 0.95 × the target, at most 5 % of frames dropped, and, where
frames arrive in real time (a live source, or a file read with --pace), a p95 end-to-end latency
within a budget: `--latency-budget-ms`, by default 2 frame periods plus the model's own p95 time for
a batch (a frame may wait for the one before it, then for its own batch). A file read losslessly has
no meaningful latency (its frames wait in the read-ahead queue, by design), so there latency is not
judged; the live-latency estimate that a live source would see is shown instead: a frame waits for
its batch to fill, (batch − 1) frame periods, then for the batch's p95 time.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

FPS_SHARE = 0.95
DROP_LIMIT = 0.05
BUDGET_PERIODS = 2
MIN_FRAMES, MIN_SECONDS = 10, 1.0


@dataclass(frozen=True)
class Target:
    fps: float
    judge_latency: bool  # frames arrive in real time: a live source, or --pace
    batch: int = 1
    budget_ms: float | None = None  # None: BUDGET_PERIODS frame periods + the model's p95

    @property
    def period_ms(self) -> float:
        return 1000.0 / self.fps


@dataclass(frozen=True)
class Measured:
    fps: float  # frames through the whole pipeline per second
    drop_ratio: float
    model_p95_ms: float  # one batch through the model
    e2e_p95_ms: float | None  # capture → sink, per frame; None where not measured
    model_fps: float | None = None  # the model alone, to name the bottleneck
    frames: int = MIN_FRAMES
    seconds: float = MIN_SECONDS


@dataclass(frozen=True)
class Verdict:
    target_fps: float
    verdict: str  # "real-time" | "not real-time" | "undecided"
    reason: str
    latency_judged: bool
    budget_ms: float | None
    live_estimate_ms: float | None  # what a live source would wait, p95: (batch − 1) periods + model p95

    def as_dict(self) -> dict:
        return asdict(self)


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def judge(target: Target, m: Measured) -> Verdict:
    budget = target.budget_ms
    if budget is None and _finite(m.model_p95_ms):
        budget = BUDGET_PERIODS * target.period_ms + m.model_p95_ms
    estimate = (target.batch - 1) * target.period_ms + m.model_p95_ms if _finite(m.model_p95_ms) else None

    def verdict(kind: str, reason: str) -> Verdict:
        return Verdict(target.fps, kind, reason, target.judge_latency, budget, estimate)

    if m.frames < MIN_FRAMES or m.seconds < MIN_SECONDS:
        return verdict("undecided", f"too little data ({m.frames} frames in {m.seconds:.1f} s)")
    need = FPS_SHARE * target.fps
    facts = [f"{m.fps:.1f} fps {'≥' if m.fps >= need else '<'} {need:.1f} (0.95 × {target.fps:g})",
             f"{m.drop_ratio:.0%} dropped"]
    causes = []
    if m.fps < need:
        if m.model_fps is not None and m.model_fps < target.fps:
            causes.append(f"the model alone manages {m.model_fps:.1f} fps")
        elif m.model_fps is not None:
            causes.append(f"the model manages {m.model_fps:.1f} fps, so decode/preprocess/render/encode are "
                          "the bottleneck")
    if m.drop_ratio > DROP_LIMIT:
        causes.append(f"more than {DROP_LIMIT:.0%} of frames dropped")
    latency_ok = True
    if target.judge_latency:
        if not _finite(m.e2e_p95_ms) or budget is None:
            return verdict("undecided", "; ".join(facts) + "; no latency measured yet")
        latency_ok = m.e2e_p95_ms <= budget
        facts.append(f"p95 end-to-end {m.e2e_p95_ms:.0f} ms {'≤' if latency_ok else '>'} {budget:.0f} ms budget")
        if not latency_ok:
            causes.append("frames wait longer than the budget")
    else:
        note = "latency not judged (a file's frames wait in the read-ahead queue)"
        if estimate is not None and budget is not None:
            note += f"; as a live source ≈ {estimate:.0f} ms p95 (budget {budget:.0f} ms)"
        facts.append(note)
    ok = m.fps >= need and m.drop_ratio <= DROP_LIMIT and latency_ok
    return verdict("real-time" if ok else "not real-time", "; ".join(facts + causes))


def combine(named: list[tuple[str, Verdict]]) -> Verdict:
    """Several streams: real-time only when every stream is; undecided while some are and none is behind."""
    behind = [f"{name}: {v.reason}" for name, v in named if v.verdict == "not real-time"]
    undecided = [name for name, v in named if v.verdict == "undecided"]
    if behind:
        kind = "not real-time"
        reason = f"{len(named) - len(behind)} of {len(named)} streams keep up; " + " | ".join(behind)
    elif undecided:
        kind, reason = "undecided", f"too little data yet for {', '.join(undecided)}"
    else:
        kind, reason = "real-time", f"every one of the {len(named)} streams is real-time"
    return Verdict(max(v.target_fps for _, v in named), kind, reason, any(v.latency_judged for _, v in named),
                   None, None)
