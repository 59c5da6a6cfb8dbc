"""Run statistics, collected beside the pipeline and read as immutable snapshots.

All times come from time.perf_counter() (monotonic). Warm-up happens before `start()` and never
reaches these figures. Each frame is counted once per stage, by its own stage.
"""

from __future__ import annotations

import resource
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace

import numpy as np
import psutil

from stream.frames import Classified, Prediction, Steady, TopK
from stream.observe.cpu import CpuMeter, CpuSnapshot
from stream.observe.histogram import BoundedSamples, Buckets
from stream.observe.realtime import Measured, Target, Verdict, judge

STAGES = ("preprocess", "inference", "postprocess", "render", "end_to_end")
RECENT_S = 10.0


@dataclass(frozen=True)
class Percentiles:
    count: int
    mean: float
    p50: float
    p95: float
    p99: float
    max: float

    @staticmethod
    def of(values) -> Percentiles:
        arr = np.asarray(values, dtype=np.float64)
        if arr.size == 0:
            return Percentiles(0, float("nan"), float("nan"), float("nan"), float("nan"), float("nan"))
        p50, p95, p99 = np.percentile(arr, [50, 95, 99])
        return Percentiles(int(arr.size), float(arr.mean()), float(p50), float(p95), float(p99), float(arr.max()))

    @staticmethod
    def of_samples(samples: BoundedSamples) -> Percentiles:
        if samples.count == 0:
            return Percentiles.of([])
        p50, p95, p99 = samples.percentiles([50, 95, 99])
        return Percentiles(samples.count, samples.mean, p50, p95, p99, samples.max)

    def as_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "p50": self.p50, "p95": self.p95, "p99": self.p99, "max": self.max}


@dataclass(frozen=True)
class Rates:
    capture: float
    inference: float
    pipeline: float


@dataclass(frozen=True)
class SnapshotRow:
    """One stream's line in a live snapshot, as the dashboard, /api/status and /metrics show it."""

    name: str
    state: str
    snap: StatsSnapshot
    drops: dict[str, int]  # by cause: "full" (newest kept), "stale" (too old to be live), "at_stop"
    reconnects: int
    stalls: int
    last_frame_age_s: float | None
    policy: str = "block"  # its buffer: latest (live) or block (lossless)


@dataclass(frozen=True)
class StatsSnapshot:
    elapsed_s: float
    frames_read: int
    frames_processed: int
    frames_rendered: int
    frames_dropped: int
    fps_1s: Rates
    fps_10s: Rates
    fps_total: Rates
    model_fps: float  # frames per second of pure model time: the backend's own capacity
    latency_ms: dict[str, Percentiles]  # over the last RECENT_S seconds
    queue_fill: int
    queue_size: int
    rss_mb: float
    peak_rss_mb: float
    device_mb: float | None
    top: list[TopK] = field(default_factory=list)
    steady: Steady | None = None  # the newest frame's steady label (stream.decisions)
    total_frames: int | None = None
    eta_s: float | None = None
    verdict: Verdict | None = None
    streams: list[SnapshotRow] = field(default_factory=list)
    histograms: dict[str, Buckets] = field(default_factory=dict)  # every sample of the run, per stage
    cpu: CpuSnapshot | None = None  # the run's CPU by stage (the run's collector only: stream.observe.cpu)

    def with_streams(self, rows: list[SnapshotRow]) -> StatsSnapshot:
        return replace(self, streams=rows)


def window_rate(stamps: deque[float], now: float, window: float, since: float) -> float:
    """Events per second over the last `window` seconds of wall time (shorter at the start)."""
    span = min(window, now - since)
    if span <= 0:
        return 0.0
    cutoff = now - span
    count = 0
    for t in reversed(stamps):
        if t <= cutoff:
            break
        count += 1
    return count / span


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


class StatsCollector:
    def __init__(self, queue_fill=lambda: 0, queue_size: int = 0, dropped=lambda: 0,
                 device_mb=lambda: None, total_frames: int | None = None, target: Target | None = None,
                 cpu: CpuMeter | None = None) -> None:
        self._lock = threading.Lock()
        self.cpu = cpu
        self._queue_fill = queue_fill
        self._queue_size = queue_size
        self._dropped = dropped
        self._device_mb = device_mb
        self._process = psutil.Process()
        self.total_frames = total_frames
        self.target = target or Target(30.0, judge_latency=False)
        self.started_at: float | None = None
        self.first_rendered_at: float | None = None
        self.last_rendered_at: float | None = None
        # Only the rolling windows read these: the last RECENT_S seconds are all that is kept, so a run of
        # any length holds a few hundred timestamps per stage, not an ever-growing history.
        self._stamps: dict[str, deque[float]] = {k: deque() for k in ("capture", "inference", "pipeline")}
        self._counts = {"capture": 0, "inference": 0, "pipeline": 0}
        self._last = {"capture": 0.0, "inference": 0.0, "pipeline": 0.0}
        # Bounded whatever the run's length (stream.observe.histogram states the error).
        self._all: dict[str, BoundedSamples] = {s: BoundedSamples() for s in STAGES}
        self._recent: deque[tuple[float, dict[str, float]]] = deque()
        self._model_s = 0.0  # summed per-frame model time
        self._top: list[TopK] = []
        self._steady: Steady | None = None
        self._final: tuple[StatsSnapshot, dict[str, Percentiles]] | None = None  # once frozen

    def start(self, now: float | None = None) -> None:
        self.started_at = time.perf_counter() if now is None else now
        if self.cpu is not None:
            self.cpu.start()

    def cpu_snapshot(self) -> CpuSnapshot | None:
        """The run's CPU by stage per frame rendered (None for a collector without a meter, or before the start)."""
        return None if self.cpu is None else self.cpu.snapshot(self._counts["pipeline"])

    def retarget(self, queue_size: int, total_frames: int | None, target: Target) -> None:
        """The run's totals when streams join or leave: capacity, expected frames and the fastest stream's target."""
        with self._lock:
            self._queue_size, self.total_frames, self.target = queue_size, total_frames, target

    def _event(self, stage: str, at: float) -> None:
        if self._final is not None:  # a frame a removed stream's capture still read as it stopped: not counted
            return
        stamps = self._stamps[stage]
        stamps.append(at)
        while stamps[0] < at - RECENT_S:
            stamps.popleft()
        self._counts[stage] += 1
        self._last[stage] = at

    def captured(self, at: float) -> None:
        with self._lock:
            self._event("capture", at)

    def inferred(self, prediction: Prediction) -> None:
        with self._lock:
            if self._final is not None:
                return
            self._event("inference", prediction.done_at)
            self._model_s += prediction.times.inference_ms / prediction.times.batch_size / 1000

    def rendered(self, item: Classified, render_ms: float, at: float) -> None:
        t = item.prediction.times
        sample = {
            "preprocess": t.preprocess_ms,
            "inference": t.inference_ms,
            "postprocess": t.postprocess_ms,
            "render": render_ms,
            "end_to_end": (at - item.frame.captured_at) * 1000,
        }
        with self._lock:
            if self._final is not None:
                return
            self._event("pipeline", at)
            if self.first_rendered_at is None:
                self.first_rendered_at = at
            self.last_rendered_at = at
            for stage, value in sample.items():
                self._all[stage].add(value)
            self._recent.append((at, sample))
            while self._recent and self._recent[0][0] < at - RECENT_S:
                self._recent.popleft()
            self._top = item.prediction.top
            self._steady = item.steady

    def _rates(self, now: float, window: float | None) -> Rates:
        since = self.started_at or now
        if window is None:
            return Rates(*(self._counts[k] / max(self._last[k] - since, 1e-9) if self._counts[k] else 0.0
                           for k in ("capture", "inference", "pipeline")))
        return Rates(*(window_rate(self._stamps[k], now, window, since) for k in ("capture", "inference", "pipeline")))

    def model_fps(self) -> float:
        n = self._counts["inference"]
        return n / self._model_s if self._model_s > 0 else 0.0

    def latencies(self) -> dict[str, Percentiles]:
        """Every post-warm-up sample of the run, per stage."""
        with self._lock:
            if self._final is not None:
                return self._final[1]
            return {s: Percentiles.of_samples(v) for s, v in self._all.items()}

    def freeze(self) -> None:
        """A stream that has left the run: its figures are final. They are kept and its samples let go: a service
        whose cameras come and go for months would otherwise hold every departed stream's latency samples (up to
        EXACT_LIMIT values a stage, ~0.7 MB a stream) and its rolling windows."""
        snap, latencies = self.snapshot(self.last_rendered_at), self.latencies()
        with self._lock:
            self._final = replace(snap, histograms={}), latencies  # the report's row reads neither histogram
            self._all, self._stamps, self._recent = {}, {}, deque()

    def snapshot(self, now: float | None = None) -> StatsSnapshot:
        now = time.perf_counter() if now is None else now
        with self._lock:
            if self._final is not None:
                return self._final[0]
            recent = {s: Percentiles.of([smp[s] for _, smp in self._recent]) for s in STAGES}
            fps_1s, fps_10s, total = self._rates(now, 1.0), self._rates(now, 10.0), self._rates(now, None)
            counts = dict(self._counts)
            top, steady = list(self._top), self._steady
            model_fps = self.model_fps()
            histograms = {s: v.buckets() for s, v in self._all.items()}
        dropped = self._dropped()
        elapsed = now - (self.started_at or now)
        eta = None
        if self.total_frames and fps_10s.pipeline > 0:
            eta = max(self.total_frames - counts["pipeline"], 0) / fps_10s.pipeline
        seen = counts["capture"]
        verdict = judge(self.target, Measured(
            fps=fps_10s.pipeline, drop_ratio=dropped / seen if seen else 0.0, model_p95_ms=recent["inference"].p95,
            e2e_p95_ms=recent["end_to_end"].p95, model_fps=model_fps, frames=counts["pipeline"], seconds=elapsed))
        return StatsSnapshot(
            elapsed_s=elapsed,
            frames_read=counts["capture"],
            frames_processed=counts["inference"],
            frames_rendered=counts["pipeline"],
            frames_dropped=dropped,
            fps_1s=fps_1s,
            fps_10s=fps_10s,
            fps_total=total,
            model_fps=model_fps,
            latency_ms=recent,
            queue_fill=self._queue_fill(),
            queue_size=self._queue_size,
            rss_mb=self._process.memory_info().rss / 2**20,
            peak_rss_mb=peak_rss_mb(),
            device_mb=self._device_mb(),
            top=top,
            steady=steady,
            total_frames=self.total_frames,
            eta_s=eta,
            verdict=verdict,
            histograms=histograms,
            cpu=self.cpu_snapshot(),
        )
