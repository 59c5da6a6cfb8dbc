"""The one real-time rule (stream.observe.realtime), used by the run verdict, the dashboard and bench."""

import pytest

from stream.observe.realtime import Measured, Target, judge

LIVE = Target(30.0, judge_latency=True)
FILE8 = Target(30.0, judge_latency=False, batch=8)


def measured(**kw) -> Measured:
    values = dict(fps=30.0, drop_ratio=0.0, model_p95_ms=20.0, e2e_p95_ms=60.0, model_fps=60.0, frames=300,
                  seconds=10.0)
    return Measured(**{**values, **kw})


@pytest.mark.parametrize("kw, expected, words", [
    ({}, "real-time", "60 ms ≤ 87 ms budget"),  # budget 2 × 33.3 + 20
    ({"fps": 28.4}, "not real-time", "28.4 fps < 28.5"),
    ({"fps": 28.6}, "real-time", "28.6 fps ≥ 28.5"),
    ({"fps": 20.0, "model_fps": 22.0}, "not real-time", "model alone manages 22.0"),
    ({"fps": 20.0}, "not real-time", "decode/preprocess/render/encode are the bottleneck"),
    ({"drop_ratio": 0.06}, "not real-time", "more than 5% of frames dropped"),
    ({"e2e_p95_ms": 2000.0}, "not real-time", "2000 ms > 87 ms budget"),
    ({"frames": 3, "seconds": 0.2}, "undecided", "too little data"),
])
def test_live_verdicts(kw, expected, words):
    v = judge(LIVE, measured(**kw))
    assert v.verdict == expected and words in v.reason, v.reason
    assert v.latency_judged


def test_a_fast_live_run_with_a_two_second_latency_is_not_real_time():
    """What the old rule missed: throughput alone called this REAL-TIME."""
    assert judge(LIVE, measured(fps=31.0, e2e_p95_ms=2000.0)).verdict == "not real-time"


def test_the_budget_can_be_set():
    assert judge(Target(30.0, True, budget_ms=50.0), measured()).verdict == "not real-time"
    assert judge(Target(30.0, True, budget_ms=500.0), measured(e2e_p95_ms=400.0)).verdict == "real-time"


def test_a_lossless_file_run_is_not_judged_on_latency_but_shows_the_live_estimate():
    v = judge(FILE8, measured(e2e_p95_ms=5000.0, model_p95_ms=120.0))
    assert v.verdict == "real-time" and not v.latency_judged
    assert v.live_estimate_ms == pytest.approx(7 * 1000 / 30 + 120)  # waits for 7 more frames, then the batch
    assert v.budget_ms == pytest.approx(2 * 1000 / 30 + 120)
    assert "latency not judged" in v.reason and "as a live source ≈ 353 ms p95 (budget 187 ms)" in v.reason


def test_no_latency_yet_on_a_live_source_is_undecided():
    assert judge(LIVE, measured(e2e_p95_ms=float("nan"))).verdict == "undecided"


def test_several_streams_are_real_time_only_together():
    from stream.observe.realtime import combine

    ok, slow, young = (judge(LIVE, measured()), judge(LIVE, measured(fps=20.0)),
                       judge(LIVE, measured(frames=3, seconds=0.2)))
    assert combine([("a", ok), ("b", ok)]).verdict == "real-time"
    both = combine([("a", ok), ("b", slow)])
    assert both.verdict == "not real-time" and "1 of 2 streams keep up" in both.reason and "b:" in both.reason
    waiting = combine([("a", ok), ("b", young)])  # nobody is behind: not a fault, just early
    assert waiting.verdict == "undecided" and "b" in waiting.reason
