"""The threaded pipeline with stand-in sources and backends: ordering, policies, failures."""

import time

import numpy as np
import pytest

from models.spec import PreprocessSpec
from stream.errors import StreamError
from stream.frames import Frame
from stream.media.sources import SourceInfo
from stream.outputs.sinks import VideoFileSink
from stream.pipeline.preprocess import Preprocessor
from tests.conftest import read_all_frames
from tests.sessions import add, local_session, run_one

SPEC = PreprocessSpec(64, 56, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CATEGORIES = [f"value{i}" for i in range(256)]


class GraySource:
    """Frame i is a uniform gray image of value i % 256, so a prediction reveals its frame."""

    def __init__(self, count: int, live: bool = False, fail_after: int | None = None, delay_s: float = 0.0):
        self.count, self.fail_after, self.delay_s = count, fail_after, delay_s
        self.info = SourceInfo("gray", "camera" if live else "file", live, 30.0, None if live else count, 96, 72)
        self._next = 0

    def read(self):
        if self.fail_after is not None and self._next >= self.fail_after:
            raise StreamError("lost gray after some frames")
        if self._next >= self.count:
            return None
        time.sleep(self.delay_s)
        i = self._next
        self._next += 1
        return Frame(i, np.full((72, 96, 3), i % 256, np.uint8), time.perf_counter(), i / 30)

    def rewind(self):
        return False

    def discard_backlog(self):
        return 0

    def decode_check(self, frames_read):
        return None

    def close(self):
        pass


class GrayBackend:
    """Logits peak at the gray value of each input: an honest stand-in with a known answer."""

    name, device, precision = "fake", "cpu", "fp32"

    def __init__(self, delay_s: float = 0.0, fail_on_call: int | None = None):
        self.delay_s, self.fail_on_call, self.calls, self.batch_sizes = delay_s, fail_on_call, 0, []

    def infer(self, batch):
        self.calls += 1
        if self.fail_on_call is not None and self.calls >= self.fail_on_call:
            raise RuntimeError("device fell over")
        time.sleep(self.delay_s)
        self.batch_sizes.append(len(batch))
        values = np.rint((batch[:, 0].mean(axis=(1, 2)) * SPEC.std[0] + SPEC.mean[0]) * 255).astype(int)
        logits = np.zeros((len(batch), 256), np.float32)
        logits[np.arange(len(batch)), values] = 10.0
        return logits

    def warmup(self, batch_size, iterations):
        return 0.0

    def device_peak_mb(self):
        return None

    def close(self):
        pass


class RecordingSink:
    def __init__(self):
        self.items, self.closed = [], False

    def write(self, item, annotated):
        self.items.append(item)
        return True

    def summary(self):
        return None

    def close(self):
        self.closed = True


class NullUi:
    def __init__(self):
        self.snaps = []

    def update(self, snap):
        self.snaps.append(snap)

    def close(self):
        pass


def run(source, backend, sinks, **opts):
    return run_one(source, backend, Preprocessor(SPEC), CATEGORIES, sinks, NullUi(), **opts)


@pytest.mark.parametrize("batch", [1, 4])
def test_block_policy_processes_every_frame_in_order_with_its_own_label(batch):
    sink = RecordingSink()
    backend = GrayBackend(delay_s=0.003)
    outcome = run(GraySource(41), backend, [sink], queue_size=2, drop_policy="block", batch=batch)
    assert outcome.status == "completed" and outcome.end_reason == "end of input"
    assert [i.frame.index for i in sink.items] == list(range(41))
    assert all(i.prediction.top[0].label == f"value{i.frame.index}" for i in sink.items)
    assert max(backend.batch_sizes) == batch
    snap = outcome.stats.snapshot()
    assert (snap.frames_read, snap.frames_processed, snap.frames_rendered, snap.frames_dropped) == (41, 41, 41, 0)
    assert sink.closed


def test_latest_policy_drops_old_frames_and_counts_them():
    sink = RecordingSink()
    outcome = run(GraySource(200, live=True), GrayBackend(delay_s=0.01), [sink], queue_size=2,
                  drop_policy="latest")
    snap = outcome.stats.snapshot()
    assert snap.frames_dropped > 0
    assert snap.frames_read == 200 == snap.frames_processed + snap.frames_dropped
    indices = [i.frame.index for i in sink.items]
    assert indices == sorted(set(indices))  # newest-first never reorders or repeats a frame
    assert all(i.prediction.top[0].label == f"value{i.frame.index}" for i in sink.items)


def test_max_frames_stops_reading(tmp_path):
    sink = RecordingSink()
    outcome = run(GraySource(100), GrayBackend(), [sink], max_frames=10)
    assert len(sink.items) == 10 == outcome.frames_read
    assert "max-frames" in outcome.end_reason


def test_error_in_inference_thread_stops_the_run_and_keeps_the_video_playable(tmp_path):
    path = tmp_path / "out.avi"
    sink = VideoFileSink(str(path), 30.0, 96, 72)
    outcome = run(GraySource(500, delay_s=0.002), GrayBackend(fail_on_call=6), [sink], queue_size=4)
    assert outcome.status == "error"
    assert isinstance(outcome.error, RuntimeError) and "fell over" in str(outcome.error)
    assert sink.written == 5
    assert len(read_all_frames(path)) == 5


def test_lost_stream_keeps_queued_frames_then_reports_the_error():
    sink = RecordingSink()
    outcome = run(GraySource(100, fail_after=12), GrayBackend(delay_s=0.005), [sink], queue_size=8)
    assert outcome.status == "error" and isinstance(outcome.error, StreamError)
    assert [i.frame.index for i in sink.items] == list(range(12))


def test_pacing_reads_a_file_at_its_own_frame_rate():
    sink = RecordingSink()
    started = time.perf_counter()
    outcome = run(GraySource(16), GrayBackend(), [sink], pace=True, target_fps=30.0)
    elapsed = time.perf_counter() - started
    assert len(sink.items) == 16
    assert elapsed >= 15 / 30.0  # 16 frames at 30 fps cannot arrive faster than 0.5 s
    assert outcome.stats.snapshot().fps_total.capture == pytest.approx(30.0, rel=0.25)


class FailingSink(RecordingSink):
    def write(self, item, annotated):
        if len(self.items) == 3:
            raise OSError("No space left on device")
        return super().write(item, annotated)


def test_failing_sink_stops_the_run_and_the_other_sinks_are_still_finalised(tmp_path):
    path = tmp_path / "out.avi"
    video = VideoFileSink(str(path), 30.0, 96, 72)
    failing = FailingSink()
    outcome = run(GraySource(100), GrayBackend(), [video, failing])
    assert outcome.status == "error" and isinstance(outcome.error, OSError)
    assert failing.closed
    assert video.written == 4  # the video sink wrote the frame on which the other sink failed
    assert len(read_all_frames(path)) == 4


def test_a_stream_that_ended_keeps_its_own_rates_while_the_others_run_on():
    from stream.pipeline.inference import Batching
    from stream.session.plan import StreamPlan

    plans = [StreamPlan(name, False, 4, 30.0, False, n) for name, n in (("short", 20), ("long", 60))]
    sources = [GraySource(20), GraySource(60, delay_s=0.05)]  # the long one runs about 2.5 s after the short
    session = local_session(GrayBackend(), Preprocessor(SPEC), CATEGORIES, Batching(4, 0.01), NullUi())
    for plan, source in zip(plans, sources, strict=True):
        add(session, plan, source, [RecordingSink()], uri=plan.name)
    outcome = session.run()
    assert [s.frames_read for s in outcome.streams] == [20, 60]
    short = session.snapshot().streams[0]
    assert short.state == "ended"
    # Shown as it was at its end: its 10 s window is not diluted by the long stream's extra seconds.
    assert short.snap.fps_10s.pipeline == pytest.approx(short.snap.fps_total.pipeline, rel=0.25)
