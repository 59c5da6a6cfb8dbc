"""The page's charts' history: each stream's fps and p95 end-to-end latency, one sample a second.

Kept on the server (not only in the browser) so that a page opened mid-run shows the last minutes at once, and
one that was reloaded or asleep has no hole. Bounded: SAMPLES per stream, MAX_STREAMS streams (a stream gone
from the snapshot is forgotten). Written by the render loop (`sample`), read by requests: one lock.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass

from stream.observe.stats import StatsSnapshot

PERIOD_S = 1.0
SAMPLES = 600  # 10 minutes at PERIOD_S
MAX_STREAMS = 64


@dataclass(frozen=True)
class Sample:
    t: float  # wall clock, seconds since the epoch (uPlot's time axis)
    fps: float | None
    p95_ms: float | None


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, 2)


class ChartHistory:
    def __init__(self, period_s: float = PERIOD_S, samples: int = SAMPLES, clock=time.time) -> None:
        self.period_s, self.samples, self.clock = period_s, samples, clock
        self._series: dict[str, deque[Sample]] = {}
        self._last = -math.inf
        self._lock = threading.Lock()

    def sample(self, snap: StatsSnapshot) -> None:
        """At most one sample per period, whatever the snapshot rate (the dashboard's is several a second)."""
        now = self.clock()
        if now - self._last < self.period_s:
            return
        self._last = now
        rows = snap.streams[:MAX_STREAMS]
        with self._lock:
            kept = {row.name: self._series.get(row.name) or deque(maxlen=self.samples) for row in rows}
            for row in rows:
                e2e = row.snap.latency_ms.get("end_to_end")
                kept[row.name].append(Sample(now, _finite(row.snap.fps_10s.pipeline),
                                             _finite(e2e.p95) if e2e is not None and e2e.count else None))
            self._series = kept

    def series(self, name: str) -> dict[str, list]:
        """Columns, as uPlot takes them: t, fps, p95_ms."""
        with self._lock:
            samples = list(self._series.get(name, ()))
        return {"t": [round(s.t, 3) for s in samples], "fps": [s.fps for s in samples],
                "p95_ms": [s.p95_ms for s in samples]}
