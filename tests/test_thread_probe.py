"""int8's plan leaves a core to the rest of the pipeline; the load checks that against the model's measured time and
gives a model that bounds the run every core."""

import time
from dataclasses import replace
from types import SimpleNamespace

import pytest

from models.spec import ModelInfo, PreprocessSpec
from stream.backends import LoadRecord
from stream.config import Config
from stream.media.sources import SourceInfo
from stream.media.streams import StreamSpec
from stream.session import launch
from stream.session.plan import model_is_serial_path, plan_run, rest_of_frame_ms

HD = SourceInfo("clip.mp4", "file", False, 30.0, 300, 1280, 720)


def test_rest_of_a_frame_grows_with_its_pixels_and_the_video_written():
    small = SourceInfo("small.mp4", "file", False, 30.0, 300, 640, 360)
    assert rest_of_frame_ms([], True) is None  # a service with no camera yet: nothing to weigh
    assert rest_of_frame_ms([HD], True) > rest_of_frame_ms([HD], False) > rest_of_frame_ms([small], False)
    assert rest_of_frame_ms([HD], False) == pytest.approx(4 * rest_of_frame_ms([small], False))
    assert rest_of_frame_ms([HD, small], False) == pytest.approx((rest_of_frame_ms([HD], False)
                                                                 + rest_of_frame_ms([small], False)) / 2)


def test_the_model_is_the_serial_path_only_when_its_thread_outlasts_a_frames_share_of_the_cores():
    # Measured on two 2-core EPYCs, 720p with video (~11 ms of CPU besides the model): AlexNet int8 batch 8 on one
    # thread took 4.4 ms a frame on one (one thread was faster) and 15.6 on the other (two threads were).
    assert not model_is_serial_path(4.4, 4.4, 11.0, 2)
    assert model_is_serial_path(15.6, 15.6, 11.0, 2)
    assert not model_is_serial_path(15.6 / 7, 16.0, 11.0, 8)  # on 8 cores it had 7 threads: it keeps up
    assert not model_is_serial_path(15.6, 15.6, 20.0, 2)  # a heavier rest: the freed core is busy


class BurningModel:
    """A CPU backend whose frames each burn `ms_per_frame` of CPU on the calling thread (a one-thread runtime)."""

    name, input_device, device, precision = "onnxruntime", "cpu", "cpu", "int8"
    ms_per_frame = 30.0
    made: list = []

    def __init__(self, request, options) -> None:
        self.threads = options.threads or 2
        self.model = ModelInfo("burner", ("a", "b"), PreprocessSpec(256, 224, (0.5,) * 3, (0.5,) * 3), "random", True)
        # The first load exports and caches; a reload finds it in the cache.
        self.load = LoadRecord(0.5, None, "hit") if BurningModel.made else LoadRecord(0.5, 2.0, "miss")
        self.closed = False
        BurningModel.made.append(self)

    def warmup(self, batch: int, iterations: int) -> float:
        started = time.perf_counter()
        end = time.thread_time() + batch * iterations * self.ms_per_frame / 1000
        while time.thread_time() < end:
            pass
        return time.perf_counter() - started

    def device_peak_mb(self):
        return None

    def close(self) -> None:
        self.closed = True


def launched(monkeypatch, ms_per_frame: float, capsys, **settings):
    monkeypatch.setattr("stream.backends.backend_class", lambda name: BurningModel)
    monkeypatch.setattr(launch, "available_cores", lambda: 2)
    monkeypatch.setattr(BurningModel, "ms_per_frame", ms_per_frame)
    monkeypatch.setattr(BurningModel, "made", [])
    cfg = replace(Config(), backend="onnxruntime", precision="int8", warmup=1, output="out.mp4", **settings)
    plan = plan_run(cfg, [StreamSpec("clip.mp4", "clip")], [HD], cores=2)
    with launch.launch_local(cfg, [], [SimpleNamespace(info=HD)], plan) as run:
        threads, record = run.loaded.threads, run.loaded.load
    assert record.cache == "miss" and record.build_s == 2.0  # the report tells the build, reloaded or not
    return plan, threads, BurningModel.made, capsys.readouterr().out


def test_a_model_that_bounds_the_run_is_reloaded_on_every_core(monkeypatch, capsys):
    plan, threads, made, out = launched(monkeypatch, 30.0, capsys)
    assert plan.threads == 1  # int8 at a file's batch: one core left to decoding, preprocessing and encoding
    assert threads == 2 and len(made) == 2 and all(m.closed for m in made)
    assert made[1].threads == 2
    assert "it bounds the run, so it gets all 2 cores" in out


def test_a_fast_model_keeps_the_plans_thread(monkeypatch, capsys):
    plan, threads, made, out = launched(monkeypatch, 1.0, capsys)
    assert threads == plan.threads == 1 and len(made) == 1 and made[0].closed
    assert "gets all" not in out


def test_the_users_thread_count_is_not_second_guessed(monkeypatch, capsys):
    plan, threads, made, out = launched(monkeypatch, 30.0, capsys, threads=1)
    assert threads == 1 and len(made) == 1 and "gets all" not in out


class SharedSession(BurningModel):
    """A runtime whose one session takes calls from several threads at once (ONNX Runtime on the CPU)."""

    parallel_calls = True


def launched_shared(monkeypatch, cores: int, ms_per_frame: float):
    monkeypatch.setattr("stream.backends.backend_class", lambda name: SharedSession)
    monkeypatch.setattr(launch, "available_cores", lambda: cores)
    monkeypatch.setattr(BurningModel, "ms_per_frame", ms_per_frame)
    monkeypatch.setattr(BurningModel, "made", [])
    cfg = replace(Config(), backend="onnxruntime", precision="int8", warmup=1, output="out.mp4")
    plan = plan_run(cfg, [StreamSpec("clip.mp4", "clip")], [HD], cores=cores)
    with launch.launch_local(cfg, [], [SimpleNamespace(info=HD)], plan) as run:
        return plan, run.loaded


def test_a_model_that_takes_calls_side_by_side_is_not_reloaded_but_called_from_every_core(monkeypatch, capsys):
    plan, loaded = launched_shared(monkeypatch, 2, 30.0)
    assert plan.threads == 1 and loaded.threads == 1 and loaded.calls == 2
    assert len(BurningModel.made) == 1  # loaded once
    assert "2 calls run side by side" in capsys.readouterr().out
    assert launched_shared(monkeypatch, 2, 1.0)[1].calls == 1  # a fast model keeps one call at a time


def test_on_more_cores_a_model_that_bounds_the_run_is_reloaded_on_every_core(monkeypatch, capsys):
    """Calls side by side were measured on 2 cores (one thread each); on 4 the plan's 3 threads make one call."""
    plan, loaded = launched_shared(monkeypatch, 4, 30.0)
    assert plan.threads == 3 and loaded.calls == 1
    assert len(BurningModel.made) == 2  # reloaded, on the backend's default: every core
    assert "it gets all 4 cores" in capsys.readouterr().out
