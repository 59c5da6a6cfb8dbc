"""The cross-stream batcher (stream.pipeline.mux) and the decisions of stream.session.plan,
stream.media.streams, stream.observe.histogram."""

import threading
import time

import numpy as np
import pytest

from stream.config import Config
from stream.errors import UserError
from stream.frames import Frame
from stream.media.sources import SourceInfo
from stream.media.streams import StreamSpec, load_sources_file, name_from_uri, output_path, stream_specs
from stream.observe.histogram import EXACT_LIMIT, RELATIVE_ERROR, BoundedSamples
from stream.pipeline.mux import Lane, StreamMux
from stream.pipeline.queues import Stopped
from stream.session.plan import plan_run

IMAGE = np.zeros((2, 2, 3), np.uint8)


def frame(stream: int, index: int, age_s: float = 0.0) -> Frame:
    return Frame(index, IMAGE, time.perf_counter() - age_s, index / 30, stream)


def test_a_batch_takes_streams_in_turn_and_keeps_each_streams_order():
    mux = StreamMux([Lane(False, 8), Lane(False, 8)], threading.Event())
    for i in range(4):
        mux.put(0, frame(0, i))
    mux.put(1, frame(1, 0))
    batch = mux.take(4, 0.0, None)
    assert [(f.stream, f.index) for f in batch.frames] == [(0, 0), (1, 0), (0, 1), (0, 2)]
    assert [(f.stream, f.index) for f in mux.take(4, 0.0, None).frames] == [(0, 3)]


def test_a_silent_stream_never_holds_a_batch_past_its_timeout():
    mux = StreamMux([Lane(True, 2), Lane(True, 2)], threading.Event())
    mux.put(0, frame(0, 0))
    started = time.perf_counter()
    batch = mux.take(2, 0.05, None)  # stream 1 sends nothing
    waited = time.perf_counter() - started
    assert [f.stream for f in batch.frames] == [0]
    assert 0.04 <= waited < 1.0


def test_a_batch_goes_as_soon_as_it_is_full():
    mux = StreamMux([Lane(True, 2)] * 3, threading.Event())
    for s in range(3):
        mux.put(s, frame(s, 0))
    started = time.perf_counter()
    assert len(mux.take(3, 5.0, None).frames) == 3
    assert time.perf_counter() - started < 1.0


def test_live_buffers_keep_the_newest_and_count_drops_by_cause():
    mux = StreamMux([Lane(True, 2)], threading.Event())
    for i in range(5):  # frames that waited 2 s before the batcher came for them
        mux.put(0, frame(0, i, age_s=2.0))
    assert mux.drops(0) == {"full": 3, "stale": 0, "at_stop": 0}
    mux.put(0, frame(0, 5))
    batch = mux.take(4, 0.0, stale_s=0.5)
    assert [f.index for f in batch.frames] == [5]  # the fresh one; the two kept but too old are stale
    assert mux.drops(0) == {"full": 4, "stale": 1, "at_stop": 0}


def test_stale_frames_are_dropped_only_from_live_streams():
    mux = StreamMux([Lane(True, 4), Lane(False, 4)], threading.Event())
    mux.put(0, frame(0, 0, age_s=2.0))
    mux.put(1, frame(1, 0, age_s=2.0))
    batch = mux.take(4, 0.0, stale_s=0.5)
    assert [(f.stream, f.index) for f in batch.frames] == [(1, 0)]  # a file's frame is never stale
    assert mux.drops(0) == {"full": 0, "stale": 1, "at_stop": 0}


def test_a_full_file_buffer_makes_its_producer_wait_and_that_is_not_a_silent_source():
    stop = threading.Event()
    mux = StreamMux([Lane(False, 1)], stop)
    mux.put(0, frame(0, 0))
    producer = threading.Thread(target=lambda: mux.put(0, frame(0, 1)))
    producer.start()
    time.sleep(0.15)
    assert producer.is_alive() and mux.waiting_for_room(0)
    assert [f.index for f in mux.take(1, 0.0, None).frames] == [0]
    producer.join(2)
    assert not producer.is_alive() and not mux.waiting_for_room(0)
    assert [f.index for f in mux.take(1, 0.0, None).frames] == [1]


def test_ends_are_reported_after_a_streams_last_frame_and_the_run_finishes_when_all_ended():
    mux = StreamMux([Lane(False, 4), Lane(True, 2)], threading.Event())
    mux.put(0, frame(0, 0))
    mux.close(0, "end of input")
    first = mux.take(4, 0.0, None)
    assert [f.index for f in first.frames] == [0] and [e.stream for e in first.ended] == [0]
    assert not first.finished
    mux.close(1, "lost")
    last = mux.take(4, 0.0, None)
    assert last.frames == [] and [(e.stream, e.reason) for e in last.ended] == [(1, "lost")] and last.finished


def test_waits_give_up_when_stop_is_set():
    stop = threading.Event()
    mux = StreamMux([Lane(True, 2)], stop)
    threading.Timer(0.1, stop.set).start()
    with pytest.raises(Stopped):
        mux.take(1, 0.0, None)


# ---------------------------------------------------------------- plan_run


def info(live: bool, fps: float = 30.0, count: int | None = 100, nominal: bool = False) -> SourceInfo:
    return SourceInfo("x", "url" if live else "file", live, fps, None if live else count, 64, 48, not live, nominal)


def specs(n: int) -> list[StreamSpec]:
    return [StreamSpec(f"u{i}", f"s{i}") for i in range(n)]


def test_one_stream_is_planned_as_before():
    file_plan = plan_run(Config(), specs(1), [info(False)])
    assert file_plan.batching.size == 8 and not file_plan.streams[0].live and file_plan.streams[0].buffer == 8
    assert file_plan.streams[0].total == 100 and file_plan.batching.stale_s is None
    live_plan = plan_run(Config(), specs(1), [info(True)])
    assert live_plan.batching.size == 1 and live_plan.batching.timeout_s == 0.0 and live_plan.streams[0].live
    assert not live_plan.reconnect.enabled  # one stream: a lost camera ends the run, as it always did


def test_several_live_streams_batch_together_within_a_frame_period():
    plan = plan_run(Config(), specs(4), [info(True, fps) for fps in (30, 25, 30, 15)])
    assert plan.batching.size == 4 and plan.batching.timeout_s == pytest.approx(1 / 30)
    assert all(s.buffer <= 4 for s in plan.streams) and plan.reconnect.enabled
    assert plan.batching.stale_s == 0.5


def test_mixed_and_explicit_settings():
    cfg = Config(batch=6, batch_timeout_ms=10, max_staleness_ms=250, reconnect="off", max_reconnects=3,
                 target_fps=12)
    plan = plan_run(cfg, specs(2), [info(False), info(True)])
    assert (plan.batching.size, plan.batching.timeout_s, plan.batching.stale_s) == (6, 0.01, 0.25)
    assert not plan.reconnect.enabled and plan.reconnect.max_attempts == 3
    assert [s.live for s in plan.streams] == [False, True] and {s.target_fps for s in plan.streams} == {12}
    folder = plan_run(Config(), specs(1), [info(False, fps=1.0, nominal=True)])
    assert folder.streams[0].target_fps == 30.0  # an image folder's 1 fps is a slideshow rate, not a target


# ---------------------------------------------------------------- streams


def test_stream_names_from_uris_are_unique_and_path_safe():
    names = [s.name for s in stream_specs(["0", "rtsp://cam1:554/live/main", "clips/door.mp4", "other/door.mp4"],
                                         None)]
    assert names == ["camera0", "cam1-554-live-main", "door", "door-2"]
    assert name_from_uri("http://127.0.0.1:8080/stream.mjpg") == "127.0.0.1-8080-stream.mjpg"


def test_sources_file(tmp_path):
    path = tmp_path / "cams.toml"
    path.write_text('[[source]]\nuri = "rtsp://a/s"\nname = "door"\ntarget_fps = 15\n\n[[source]]\nuri = "b.mp4"\n')
    assert load_sources_file(str(path)) == [StreamSpec("rtsp://a/s", "door", 15.0), StreamSpec("b.mp4", "b")]
    for text, fragment in [('[[source]]\nname = "x"\n', "needs a uri"), ('[[source]]\nuri = "a"\nfps = 3\n',
                           "unknown key"), ('x = 1\n', "[[source]] tables"), ('[[source]]\nuri = "a"\nname = "a b"\n',
                                                                                "name 'a b'")]:
        path.write_text(text)
        with pytest.raises(UserError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
            load_sources_file(str(path))


def test_output_paths_per_stream():
    assert output_path("out/{stream}.mp4", "door", 2, "--output") == "out/door.mp4"
    assert output_path("all.jsonl", "door", 2, "--predictions") == "all.jsonl"  # one log, a stream field per line
    assert output_path("one.mp4", "door", 1, "--output") == "one.mp4"
    with pytest.raises(UserError, match="cannot share one video"):
        output_path("one.mp4", "door", 2, "--output")


# ---------------------------------------------------------------- histogram


def test_bounded_percentiles_are_exact_for_short_runs_and_within_the_stated_error_after():
    rng = np.random.default_rng(0)
    values = rng.lognormal(3.0, 0.8, 3 * EXACT_LIMIT)
    samples = BoundedSamples()
    for v in values[:1000]:
        samples.add(float(v))
    assert samples.exact and samples.percentiles([50, 95]) == pytest.approx(np.percentile(values[:1000], [50, 95]))
    for v in values[1000:]:
        samples.add(float(v))
    assert not samples.exact
    for got, want in zip(samples.percentiles([50, 95, 99]), np.percentile(values, [50, 95, 99]), strict=True):
        assert abs(got - want) <= RELATIVE_ERROR * want * 1.05
    assert samples.count == values.size and samples.max == values.max()
    assert samples.mean == pytest.approx(values.mean())


def test_frames_left_at_a_stop_are_counted_as_dropped_at_stop():
    mux = StreamMux([Lane(False, 8)], threading.Event())
    for i in range(3):
        mux.put(0, frame(0, i))
    mux.discard_unprocessed()
    assert mux.drops(0) == {"full": 0, "stale": 0, "at_stop": 3} and mux.dropped(0) == 3 and mux.fill(0) == 0


def test_backoff_doubles_to_its_cap_and_survives_days_of_attempts():
    import random

    from stream.pipeline.capture import Reconnect

    policy, rng = Reconnect(True, jitter=0.0), random.Random(0)
    assert [policy.delay(a, rng) for a in (1, 2, 3, 6, 7)] == [1.0, 2.0, 4.0, 30.0, 30.0]
    assert policy.delay(5000, rng) == 30.0  # 2 ** 4999 would overflow a float
    jittered = [Reconnect(True).delay(3, rng) for _ in range(200)]
    assert 3.0 <= min(jittered) < max(jittered) <= 5.0
