"""Model calls side by side (stream.pipeline.inference, `calls` > 1): batches run at once on several threads, yet
every stream's results and its end leave in frame order, a stop loses no frame taken, an error in any caller ends
the run, and each caller's CPU is the model's."""

import threading
import time
from itertools import pairwise

import numpy as np
import pytest

from stream.pipeline.inference import Batching
from stream.pipeline.preprocess import Preprocessor
from stream.session.plan import StreamPlan
from tests.sessions import add, local_session
from tests.test_hardening import Requests
from tests.test_overlap import assert_a_stop_loses_nothing
from tests.test_pipeline import CATEGORIES, SPEC, GrayBackend, GraySource, NullUi, RecordingSink


class UnevenBackend(GrayBackend):
    """Every other call is slow, so a batch handed over later often comes back first. Records each call's first
    gray value (its frame), its span and its thread."""

    def __init__(self, slow_s=0.04, fast_s=0.002, fail_on_call=None):
        super().__init__(0.0, fail_on_call)
        self.slow_s, self.fast_s = slow_s, fast_s
        self.log, self._lock, self._count = [], threading.Lock(), 0

    def infer(self, batch):
        with self._lock:
            self._count += 1
            slow = self._count % 2 == 1
        first = int(np.rint((batch[0, 0].mean() * SPEC.std[0] + SPEC.mean[0]) * 255))
        start = time.perf_counter()
        time.sleep(self.slow_s if slow else self.fast_s)
        out = super().infer(batch)
        with self._lock:
            self.log.append((first, start, time.perf_counter(), threading.current_thread().name))
        return out


def session(backend, batch=2, calls=2):
    return local_session(backend, Preprocessor(SPEC), CATEGORIES, Batching(batch, 0.01), NullUi(), calls=calls)


def test_batches_run_side_by_side_and_every_stream_keeps_its_order():
    backend = UnevenBackend()
    sinks = {name: RecordingSink() for name in ("a", "b", "c")}
    s = session(backend)
    for name, count in (("a", 40), ("b", 9), ("c", 25)):
        add(s, StreamPlan(name, False, 4, 30.0, False, count), GraySource(count), [sinks[name]], uri=name)
    outcome = s.run()
    assert outcome.status == "completed"
    for name, count in (("a", 40), ("b", 9), ("c", 25)):
        items = sinks[name].items
        assert [i.frame.index for i in items] == list(range(count)), name
        assert all(i.prediction.top[0].label == f"value{i.frame.index}" for i in items)
        assert sinks[name].closed
    assert all(st.end_reason == "end of input" for st in outcome.streams)
    assert {thread for *_, thread in backend.log} == {"inference", "inference-2"}
    spans = sorted(backend.log, key=lambda x: x[1])
    assert any(b[1] < a[2] for a, b in pairwise(spans)), "no call started while another ran"
    # Calls came back out of the order they were handed over in, and the results still left in order.
    assert any(later[2] < earlier[2] for earlier, later in pairwise(spans))
    assert s.totals.snapshot().frames_processed == 74


def test_one_call_at_a_time_is_the_default():
    backend = UnevenBackend(0.005, 0.005)
    sink = RecordingSink()
    s = session(backend, calls=1)
    add(s, StreamPlan("s", False, 4, 30.0, False, 20), GraySource(20), [sink], uri="s")
    assert s.run().status == "completed"
    assert [i.frame.index for i in sink.items] == list(range(20))
    assert {thread for *_, thread in backend.log} == {"inference"}


def test_a_stop_mid_run_loses_no_frame_taken_with_calls_in_flight():
    assert_a_stop_loses_nothing(session(UnevenBackend(0.05, 0.01), batch=1), RecordingSink())


@pytest.mark.parametrize("fail_on_call", [1, 2, 6])
def test_an_error_in_any_caller_ends_the_run_with_that_error(fail_on_call):
    sink = RecordingSink()
    s = session(UnevenBackend(0.02, 0.002, fail_on_call=fail_on_call))
    add(s, StreamPlan("s", False, 4, 30.0, False, 200), GraySource(200), [sink], uri="s")
    outcome = s.run()
    assert outcome.status == "error"
    assert "device fell over" in str(outcome.error)
    assert sink.closed
    shown = [i.frame.index for i in sink.items]
    assert shown == sorted(set(shown))


class BurningBackend(GrayBackend):
    """Burns `ms` of CPU a frame on the calling thread."""

    def __init__(self, ms):
        super().__init__()
        self.ms = ms

    def infer(self, batch):
        end = time.thread_time() + self.ms * len(batch) / 1000
        while time.thread_time() < end:
            pass
        return super().infer(batch)


def test_each_callers_cpu_is_the_models():
    frames, ms = 60, 8.0
    sink = RecordingSink()
    s = session(BurningBackend(ms))
    add(s, StreamPlan("s", False, 4, 30.0, False, frames), GraySource(frames), [sink], uri="s")
    assert s.run().status == "completed"
    clocks = {c.name: c for c in s.engine.stage.clocks}
    assert {"inference", "preprocess", "inference-2"} <= set(clocks)
    model = [clocks[n].parts.get("inference", 0.0) for n in ("inference", "inference-2")]
    assert all(m > 0 for m in model), model  # both callers ran batches
    assert sum(model) == pytest.approx(frames * ms / 1000, rel=0.1)


class SlowOnceBackend(GrayBackend):
    """Fast, except one call on the second caller once `after` results are out, which takes `slow_s`."""

    def __init__(self, sink, slow_s, after=5):
        super().__init__(0.01)
        self.sink, self.slow_s, self.after = sink, slow_s, after
        self.fired, self.span, self.starts = threading.Event(), None, []

    def infer(self, batch):
        self.starts.append(time.perf_counter())
        if threading.current_thread().name == "inference-2" and len(self.sink.items) >= self.after \
                and not self.fired.is_set():
            self.fired.set()
            start = time.perf_counter()
            time.sleep(self.slow_s)
            self.span = (start, time.perf_counter())
        return super().infer(batch)


def test_a_stop_during_a_slow_call_on_another_caller_keeps_every_frame_in_order():
    sink = RecordingSink()
    backend = SlowOnceBackend(sink, slow_s=1.6)
    s = session(backend, batch=1)
    add(s, StreamPlan("s", False, 4, 30.0, False, 100_000), GraySource(100_000), [sink], uri="s")
    requests, result = Requests(), {}
    runner = threading.Thread(target=lambda: result.setdefault("outcome", s.run(requests)))
    runner.start()
    assert backend.fired.wait(30)
    time.sleep(0.2)
    requests.requested = "SIGTERM"
    runner.join(30)
    stream = result["outcome"].streams[0]
    shown = [i.frame.index for i in sink.items]
    assert shown == list(range(len(shown)))
    snap = stream.slot.stats.snapshot()
    assert snap.frames_processed == snap.frames_rendered == len(shown)
    assert stream.frames_read == len(shown) + stream.drops["at_stop"]


def test_the_other_callers_do_not_race_ahead_of_a_slow_call():
    """Their results could not leave before the slow one's: they would only sit there going stale."""
    sink = RecordingSink()
    backend = SlowOnceBackend(sink, slow_s=0.5)
    s = session(backend, batch=1)
    add(s, StreamPlan("s", False, 4, 30.0, False, 200), GraySource(200), [sink], uri="s")
    assert s.run().status == "completed"
    assert [i.frame.index for i in sink.items] == list(range(200))
    start, end = backend.span
    during = [t for t in backend.starts if start < t < end]
    assert len(during) <= 2, len(during)  # unchecked, the other caller ran ~40 batches meanwhile


class FailsLateBackend(GrayBackend):
    """The second caller's first batch fails after the inference thread has classified the rest."""

    def infer(self, batch):
        out = super().infer(batch)
        if threading.current_thread().name == "inference-2":
            time.sleep(0.5)
            raise RuntimeError("device fell over")
        return out


def test_frames_classified_behind_a_failed_call_still_reach_the_sinks():
    sink = RecordingSink()
    s = session(FailsLateBackend(), batch=1)
    add(s, StreamPlan("s", False, 8, 30.0, False, 4), GraySource(4), [sink], uri="s")
    outcome = s.run()
    assert outcome.status == "error" and "device fell over" in str(outcome.error)
    stream = outcome.streams[0]
    shown = [i.frame.index for i in sink.items]
    assert shown == sorted(shown) and len(shown) >= 2, shown
    assert stream.frames_read == len(shown) + 1 + stream.drops["at_stop"], (stream.frames_read, shown, stream.drops)
