import math
import time
from collections import deque

import numpy as np
import pytest

from stream.frames import Classified, Frame, Prediction, StageTimes, TopK
from stream.observe.stats import Percentiles, StatsCollector, window_rate


def test_percentiles_match_numpy_and_handle_empty():
    values = [5.0, 1.0, 3.0, 2.0, 4.0, 100.0]
    p = Percentiles.of(values)
    assert p.count == 6
    assert p.mean == pytest.approx(np.mean(values))
    assert p.p50 == pytest.approx(3.5)
    assert p.p95 == pytest.approx(np.percentile(values, 95))
    assert p.max == 100.0
    assert math.isnan(Percentiles.of([]).p50)


def test_window_rate_counts_events_over_wall_time():
    stamps = deque(np.arange(0.0, 20.0, 0.1))  # 10 events per second for 20 s
    assert window_rate(stamps, now=20.0, window=1.0, since=0.0) == pytest.approx(10, abs=1)
    assert window_rate(stamps, now=20.0, window=10.0, since=0.0) == pytest.approx(10, abs=0.2)
    # Nothing new for 5 s: the 1 s rate drops to zero instead of repeating the last value.
    assert window_rate(stamps, now=25.0, window=1.0, since=0.0) == 0
    # Shortly after start the window is clipped to the elapsed time, not diluted by it.
    early = deque([0.1, 0.2, 0.3, 0.4])
    assert window_rate(early, now=0.5, window=10.0, since=0.0) == pytest.approx(8.0)


def _item(index: int, captured_at: float, inference_ms: float = 20.0, batch: int = 1) -> Classified:
    frame = Frame(index=index, image=np.zeros((2, 2, 3), np.uint8), captured_at=captured_at, time_s=index / 30)
    pred = Prediction(index, [TopK(1, "cat", 0.9)], StageTimes(1.0, inference_ms, 0.5, batch), captured_at + 0.03)
    return Classified(frame, pred)


def test_collector_counts_each_frame_once_per_stage():
    stats = StatsCollector(total_frames=10)
    stats.start(now=100.0)
    for i in range(10):
        t = 100.0 + i * 0.1
        stats.captured(t)
        item = _item(i, t)
        stats.inferred(item.prediction)
        stats.rendered(item, render_ms=2.0, at=t + 0.05)
    snap = stats.snapshot(now=101.0)
    assert (snap.frames_read, snap.frames_processed, snap.frames_rendered) == (10, 10, 10)
    lat = stats.latencies()
    assert lat["end_to_end"].count == 10
    assert lat["end_to_end"].p50 == pytest.approx(50.0)
    # 10 frames over 0.95 s of pipeline wall time, not 10 frames over the sum of their latencies.
    assert snap.fps_total.pipeline == pytest.approx(10 / 0.95)
    assert snap.model_fps == pytest.approx(1000 / 20.0)
    assert snap.top[0].label == "cat"
    assert snap.eta_s == pytest.approx(0.0)


def test_model_fps_divides_batch_time_by_batch_size():
    stats = StatsCollector()
    stats.start(now=0.0)
    for i in range(4):
        stats.inferred(_item(i, 0.0, inference_ms=40.0, batch=4).prediction)
    assert stats.model_fps() == pytest.approx(100.0)  # 4 frames per 40 ms


def test_a_frozen_collector_keeps_its_figures_and_lets_its_samples_go():
    stats = StatsCollector()
    stats.start(now=100.0)
    for i in range(2000):
        t = 100.0 + i / 30
        stats.captured(t)
        item = _item(i, t, inference_ms=10.0 + i % 7)
        stats.inferred(item.prediction)
        stats.rendered(item, render_ms=2.0, at=t + 0.05)
    before_snap, before_lat = stats.snapshot(stats.last_rendered_at), stats.latencies()
    stats.freeze()
    assert stats.latencies() == before_lat
    after = stats.snapshot(time.perf_counter())  # any time later: a removed stream's figures are those of its end
    assert (after.frames_rendered, after.fps_total, after.model_fps) == (2000, before_snap.fps_total,
                                                                         before_snap.model_fps)
    assert after.verdict == before_snap.verdict
    assert not stats._all and not stats._recent and not stats._stamps  # ~2000 samples a stage no longer held
    late = _item(2000, 200.0)  # a removed stream's capture may still hand over the frame it was reading
    stats.captured(200.0)
    stats.inferred(late.prediction)
    stats.rendered(late, render_ms=2.0, at=200.1)
    assert stats.snapshot().frames_read == 2000 and stats.latencies()["end_to_end"].count == 2000
