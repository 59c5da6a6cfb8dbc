"""Run-long latency percentiles in bounded memory, with a stated error.

Keeping every sample costs 8 bytes per stage per frame (about 124 MB a day at 30 fps, per stream).
`BoundedSamples` keeps the first `EXACT_LIMIT` samples exactly (short runs report exact numpy
percentiles), then folds them into fixed log-spaced bins 1 % wide from 1 µs to 1000 s: about 2,800
counters whatever the run's length, and each percentile within `RELATIVE_ERROR` of the exact one
(half a bin). Count, mean and max stay exact.
"""

from __future__ import annotations

import bisect
import math
from array import array
from dataclasses import dataclass

import numpy as np

EXACT_LIMIT = 16_384
LOW_MS, HIGH_MS, RATIO = 1e-3, 1e6, 1.01
BINS = int(math.ceil(math.log(HIGH_MS / LOW_MS) / math.log(RATIO))) + 1
RELATIVE_ERROR = (RATIO - 1) / 2  # a bin's midpoint is within half its width of any value in it
# Fixed buckets for Prometheus histograms (stream.web.metrics), counted exactly beside the percentile data.
BUCKETS_MS = (1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0)
METHOD = (f"exact up to {EXACT_LIMIT} samples per stage, then log-spaced bins {RATIO - 1:.0%} wide: percentiles "
          f"within {RELATIVE_ERROR:.1%} of the exact ones")


@dataclass(frozen=True)
class Buckets:
    """How many samples fell at or below each bound of BUCKETS_MS (cumulative, as Prometheus wants), and their sum."""

    bounds_ms: tuple[float, ...]
    cumulative: tuple[int, ...]
    count: int
    sum_ms: float


class BoundedSamples:
    def __init__(self) -> None:
        self._exact: array | None = array("d")
        self._counts: np.ndarray | None = None
        self._buckets = [0] * (len(BUCKETS_MS) + 1)  # the last: above every bound
        self.count = 0
        self.total = 0.0
        self.max = float("-inf")

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        self.max = max(self.max, value)
        self._buckets[bisect.bisect_left(BUCKETS_MS, value)] += 1
        if self._exact is not None:
            self._exact.append(value)
            if len(self._exact) > EXACT_LIMIT:
                self._fold()
        else:
            self._counts[_bin(value)] += 1

    def _fold(self) -> None:
        self._counts = np.zeros(BINS, np.int64)
        values = np.frombuffer(self._exact, np.float64)
        np.add.at(self._counts, _bins(values), 1)
        self._exact = None

    def buckets(self) -> Buckets:
        running, cumulative = 0, []
        for n in self._buckets[:-1]:
            running += n
            cumulative.append(running)
        return Buckets(BUCKETS_MS, tuple(cumulative), self.count, self.total)

    @property
    def exact(self) -> bool:
        return self._exact is not None

    def percentiles(self, qs: list[float]) -> list[float]:
        if self.count == 0:
            return [float("nan")] * len(qs)
        if self._exact is not None:
            return [float(v) for v in np.percentile(np.frombuffer(self._exact, np.float64), qs)]
        cumulative = np.cumsum(self._counts)
        out = []
        for q in qs:
            rank = q / 100 * (self.count - 1)
            index = int(np.searchsorted(cumulative, rank, side="right"))
            out.append(min(_midpoint(index), self.max))
        return out

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else float("nan")


def _bin(value: float) -> int:
    if value <= LOW_MS:
        return 0
    return min(int(math.log(value / LOW_MS) / math.log(RATIO)) + 1, BINS - 1)


def _bins(values: np.ndarray) -> np.ndarray:
    safe = np.maximum(values, LOW_MS)
    index = np.floor(np.log(safe / LOW_MS) / math.log(RATIO)).astype(np.int64) + 1
    index[values <= LOW_MS] = 0
    return np.minimum(index, BINS - 1)


def _midpoint(index: int) -> float:
    """Geometric middle of bin `index`: bin i > 0 holds (LOW·RATIO^(i−1), LOW·RATIO^i]."""
    if index <= 0:
        return LOW_MS
    return LOW_MS * RATIO ** (index - 0.5)
