"""The inference stage with preprocessing overlapped (stream.pipeline.inference): the next batch is preprocessed
while the model runs, results and stream ends still leave in frame order, and a stop loses no frame taken."""

import threading
import time

import pytest

from stream.pipeline.inference import Batching
from stream.pipeline.preprocess import Preprocessor
from stream.session.plan import StreamPlan
from tests.sessions import add, local_session
from tests.test_hardening import Requests
from tests.test_pipeline import CATEGORIES, SPEC, GrayBackend, GraySource, NullUi, RecordingSink


class Spans:
    """(start, end) of each call, from several threads."""

    def __init__(self):
        self.spans, self.threads, self._lock = [], set(), threading.Lock()

    def around(self, call):
        start = time.perf_counter()
        try:
            return call()
        finally:
            with self._lock:
                self.spans.append((start, time.perf_counter()))
                self.threads.add(threading.current_thread().name)


class TimedPreprocessor(Preprocessor):
    def __init__(self):
        super().__init__(SPEC)
        self.spans = Spans()

    def __call__(self, images):
        return self.spans.around(lambda: super(TimedPreprocessor, self).__call__(images))


class TimedBackend(GrayBackend):
    def __init__(self, delay_s):
        super().__init__(delay_s)
        self.spans = Spans()

    def infer(self, batch):
        return self.spans.around(lambda: super(TimedBackend, self).infer(batch))


def session_with(backend, preprocessor, batch, overlap, ui=None):
    session = local_session(backend, preprocessor, CATEGORIES, Batching(batch, 0.01), ui or NullUi())
    if not overlap:
        session.engine.stage.feeder = None
    return session


def overlapped(pre: Spans, infer: Spans) -> int:
    """Model calls during which a preprocessing call started."""
    return sum(any(a < p_start < b for p_start, _ in pre.spans) for a, b in infer.spans)


@pytest.mark.parametrize("batch", [1, 3])
def test_the_next_batch_is_preprocessed_while_the_model_runs(batch):
    results = {}
    for overlap in (True, False):
        pre, backend, sink = TimedPreprocessor(), TimedBackend(0.02), RecordingSink()
        session = session_with(backend, pre, batch, overlap)
        add(session, StreamPlan("s", False, 8, 30.0, False, 60), GraySource(60), [sink], uri="s")
        outcome = session.run()
        assert outcome.status == "completed"
        assert [i.frame.index for i in sink.items] == list(range(60))
        assert all(i.prediction.top[0].label == f"value{i.frame.index}" for i in sink.items)
        results[overlap] = (overlapped(pre.spans, backend.spans), len(backend.spans.spans), pre.spans.threads)
    hits, calls, threads = results[True]
    assert hits >= calls // 2, results  # the source is far faster than the model: nearly every call overlaps
    assert threads == {"preprocess"}
    assert results[False][0] == 0 and results[False][2] == {"inference"}


def test_streams_keep_their_order_and_end_after_their_last_result():
    sinks = {name: RecordingSink() for name in ("a", "b", "c")}
    session = session_with(GrayBackend(0.002), Preprocessor(SPEC), 2, True)
    for name, count in (("a", 30), ("b", 7), ("c", 19)):
        add(session, StreamPlan(name, False, 4, 30.0, False, count), GraySource(count), [sinks[name]], uri=name)
    outcome = session.run()
    assert outcome.status == "completed"
    for name, count in (("a", 30), ("b", 7), ("c", 19)):
        assert [i.frame.index for i in sinks[name].items] == list(range(count)), name
        assert sinks[name].closed
    assert all(s.end_reason == "end of input" for s in outcome.streams)


def test_a_stop_mid_run_loses_no_frame_taken_from_the_buffers():
    """Every frame read is shown or counted as dropped at the stop, with the hand-off between the two threads full."""
    sink = RecordingSink()
    session = session_with(GrayBackend(0.03), Preprocessor(SPEC), 1, True)
    assert_a_stop_loses_nothing(session, sink)


def assert_a_stop_loses_nothing(session, sink):
    """Stop a long run once 10 results are out: every frame read is shown, in order, or dropped at the stop."""
    add(session, StreamPlan("s", False, 4, 30.0, False, 100_000), GraySource(100_000), [sink], uri="s")
    requests, result = Requests(), {}
    runner = threading.Thread(target=lambda: result.setdefault("outcome", session.run(requests)))
    runner.start()
    try:
        deadline = time.monotonic() + 30
        while len(sink.items) < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        requests.requested = "SIGTERM"
    finally:
        runner.join(30)
    outcome = result["outcome"]
    assert outcome.status == "interrupted"
    stream = outcome.streams[0]
    shown = [i.frame.index for i in sink.items]
    assert shown == list(range(len(shown)))
    assert stream.frames_read == len(shown) + stream.drops["at_stop"], (stream.frames_read, len(shown), stream.drops)
    snap = stream.slot.stats.snapshot()
    assert snap.frames_processed == snap.frames_rendered == len(shown)


def test_an_error_while_preprocessing_ends_the_run_with_that_error():
    class Broken(Preprocessor):
        def __call__(self, images):
            raise ValueError("bad pixels")

    sink = RecordingSink()
    session = session_with(GrayBackend(), Broken(SPEC), 1, True)
    add(session, StreamPlan("s", False, 4, 30.0, False, 20), GraySource(20), [sink], uri="s")
    outcome = session.run()
    assert outcome.status == "error"
    assert "bad pixels" in str(outcome.error)
    assert sink.closed
