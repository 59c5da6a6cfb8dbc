"""Streams that join and leave a run in progress (the session's internal API, as a REST API will call it)."""

import gc
import os
import threading
import time

import psutil
import pytest

from stream.errors import UserError
from stream.media.streams import StreamSpec
from stream.outputs.kinds import Outputs
from stream.outputs.sinks import VideoSummary
from stream.pipeline.inference import Batching
from stream.pipeline.preprocess import Preprocessor
from stream.session.plan import StreamPlan
from stream.session.report import LoadTimes, build_report
from tests.conftest import read_all_frames
from tests.sessions import add, local_session
from tests.test_pipeline import CATEGORIES, SPEC, GrayBackend, GraySource, NullUi, RecordingSink


def plan(name: str, count: int | None, live: bool = False) -> StreamPlan:
    return StreamPlan(name, live, 2 if live else 4, 30.0, live, count)


def wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_stream_joins_and_one_leaves_mid_file_while_the_others_lose_nothing(tmp_path):
    outputs = Outputs({"output": str(tmp_path / "{stream}.avi")}, "mjpg")
    backend = GrayBackend(delay_s=0.002)
    session = local_session(backend, Preprocessor(SPEC), CATEGORIES, Batching(4, 0.02), NullUi(), outputs=outputs)
    sinks = {name: RecordingSink() for name in ("a", "b", "c")}
    add(session, plan("a", 150), GraySource(150, delay_s=0.01), [sinks["a"]], uri="a")
    add(session, plan("b", 600), GraySource(600, delay_s=0.01), [sinks["b"]], uri="b")
    result: dict = {}
    runner = threading.Thread(target=lambda: result.setdefault("outcome", session.run()))
    runner.start()
    try:
        wait_for(lambda: len(sinks["a"].items) >= 20)
        joined = session.add(StreamSpec("c", "c"), GraySource(90).info, plan("c", 90), GraySource(90, delay_s=0.01),
                             [sinks["c"]])
        assert joined.name == "c" and session.names() == ["a", "b", "c"]
        with pytest.raises(UserError, match="already in this run"):
            session.add(StreamSpec("c", "c"), GraySource(5).info, plan("c", 5), GraySource(5))
        wait_for(lambda: len(sinks["b"].items) >= 60)
        removed_at = time.perf_counter()
        summaries = session.remove("b").result(timeout=20)
        finalised_s = time.perf_counter() - removed_at
        shown_b = len(sinks["b"].items)
        with pytest.raises(UserError, match="no stream named"):
            session.remove("nope")
    finally:
        runner.join(60)
    outcome = result["outcome"]
    assert outcome.status == "completed", outcome.end_reason
    by_name = {s.name: s for s in outcome.streams}
    # The streams that stayed: every frame processed, in order, each with its own label.
    for name, count in (("a", 150), ("c", 90)):
        assert by_name[name].frames_read == count and by_name[name].state == "ended"
        assert [i.frame.index for i in sinks[name].items] == list(range(count))
        assert all(i.prediction.top[0].label == f"value{i.frame.index % 256}" for i in sinks[name].items)
    # The one removed mid-file: its outputs finalised when the removal returned, playable to its last frame.
    removed = by_name["b"]
    assert removed.state == "removed" and 60 <= shown_b < 600 and finalised_s < 5
    video = next(s for s in summaries if isinstance(s, VideoSummary))
    assert video.written == shown_b == len(read_all_frames(video.path))
    assert removed.frames_read == shown_b + sum(removed.drops.values())  # every frame read shown or counted
    # Its report row stays; the removal is no fault of the run.
    from stream.backends import LoadRecord
    from stream.observe.runinfo import RunInfo

    info = RunInfo(GraySource(1).info, "gray", "none", False, "fake", "cpu", "fp32", 4, "block")
    report = build_report(info, outcome, LoadTimes(LoadRecord(0.0, None, "not used"), 0.0, 0.0), 0.0, None)
    rows = {r["name"]: r for r in report["streams"]}
    assert set(rows) == {"a", "b", "c"} and rows["b"]["state"] == "removed"
    assert rows["b"]["frames"]["written"] == shown_b and rows["a"]["frames"]["written"] == 150
    # The batcher forgot its lane once its last frame was taken: no round looks at it, no batch waits for it.
    assert session.engine.mux.active() == []  # every stream has ended and left the rounds
    assert session.names() == ["a", "b", "c"]


def test_a_run_kept_open_waits_with_no_stream_and_ends_on_a_stop(tmp_path):
    session = local_session(GrayBackend(), Preprocessor(SPEC), CATEGORIES, Batching(2, 0.01), NullUi(),
                            keep_running=True)
    result: dict = {}
    runner = threading.Thread(target=lambda: result.setdefault("outcome", session.run()))
    runner.start()
    try:
        time.sleep(0.5)
        assert runner.is_alive() and session.snapshot().streams == []  # waiting for cameras, not finished
        sink = RecordingSink()
        session.add(StreamSpec("late", "late"), GraySource(30).info, plan("late", 30), GraySource(30), [sink])
        wait_for(lambda: len(sink.items) == 30)
        time.sleep(0.3)
        assert runner.is_alive()  # its only stream ended: a service goes on waiting
        assert session.snapshot().streams[0].state == "ended"
        session.remove("late").result(timeout=10)
        assert session.snapshot().streams == []  # a removed stream leaves the live view (its report row stays)
    finally:
        session.engine.stop_event.set()
        runner.join(20)
    assert not runner.is_alive()
    assert result["outcome"].streams[0].frames_read == 30


def _counts() -> tuple[int, int, float]:
    gc.collect()
    return threading.active_count(), len(os.listdir("/proc/self/fd")), psutil.Process().memory_info().rss / 2**20


@pytest.mark.slow
def test_200_join_leave_cycles_leave_threads_descriptors_and_memory_flat(tmp_path):
    outputs = Outputs({"output": str(tmp_path / "{stream}.avi"), "predictions": str(tmp_path / "all.jsonl")}, "mjpg")
    before = threading.active_count()  # ours, and any an earlier test in this process left to die on its own
    session = local_session(GrayBackend(), Preprocessor(SPEC), CATEGORIES, Batching(2, 0.01), None,
                            keep_running=True, outputs=outputs)  # a UI that keeps no snapshot, as the real ones
    add(session, plan("steady", None, live=True), GraySource(10**6, live=True, delay_s=0.02), uri="steady")
    runner = threading.Thread(target=session.run)
    runner.start()
    samples = []
    try:
        for cycle in range(200):
            name = f"cam{cycle}"
            sink = RecordingSink()
            session.add(StreamSpec(name, name), GraySource(400).info, plan(name, 400),
                        GraySource(400, delay_s=0.001), [sink])
            wait_for(lambda s=sink: len(s.items) >= 3)
            session.remove(name).result(timeout=20)
            os.unlink(tmp_path / f"{name}.avi")
            if cycle in (19, 199):
                # capture threads have ended: left are those before, the runner, the steady camera's capture, the
                # batch stage's two threads and the steady camera's video encoder
                wait_for(lambda: threading.active_count() <= before + 1 + 4, timeout=10)
                samples.append(_counts())
    finally:
        session.engine.stop_event.set()
        runner.join(30)
    (threads0, fds0, rss0), (threads1, fds1, rss1) = samples
    print(f"after 20 cycles: {threads0} threads, {fds0} fds, {rss0:.0f} MB; "
          f"after 200: {threads1} threads, {fds1} fds, {rss1:.0f} MB")
    assert threads1 == threads0
    assert fds1 <= fds0 + 2
    assert rss1 - rss0 < 40  # the newest 100 removed streams' rows (frozen collectors), the rest summed


@pytest.mark.slow
def test_a_service_with_no_stream_answers_and_ends_cleanly_on_ctrl_c(tmp_path):
    """`--keep-running` with no source: the server answers while the run waits for cameras; Ctrl-C ends it with
    a report, exit 130."""
    import json
    import re
    import signal
    import urllib.request

    from tests.conftest import start_cli

    report = tmp_path / "r.json"
    proc = start_cli("--keep-running", "--serve", "127.0.0.1:0", "--model", "efficientnet_lite0", "--backend",
                     "onnxruntime", "--cache-dir", str(tmp_path / "cache"), "--report", str(report), "--no-display")
    try:
        url = None
        deadline = time.monotonic() + 120
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, proc.stderr.read()
            found = re.search(r"serving (http://\S+)", line)
            url = found.group(1) if found else None
        assert url, "the server never said where it listens"

        def status() -> dict:
            with urllib.request.urlopen(url + "api/status", timeout=10) as r:
                return json.loads(r.read())

        deadline = time.monotonic() + 120
        while status()["state"] != "running":  # the model loads, then the run waits with no stream
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.2)
        time.sleep(1.0)
        doc = status()
        assert doc["state"] == "running" and doc["streams"] == [] and proc.poll() is None
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    data = json.loads(report.read_text())
    assert data["status"] == "interrupted" and data["frames"]["read"] == 0


def test_beyond_the_newest_removed_streams_the_oldest_are_summed_and_let_go(tmp_path, monkeypatch):
    from stream.backends import LoadRecord
    from stream.observe.runinfo import RunInfo
    from stream.session import session as session_module

    monkeypatch.setattr(session_module, "REMOVED_LISTED", 3)
    outputs = Outputs({"output": str(tmp_path / "{stream}.avi")}, "mjpg")
    session = local_session(GrayBackend(), Preprocessor(SPEC), CATEGORIES, Batching(2, 0.01), NullUi(),
                            keep_running=True, outputs=outputs)
    add(session, plan("steady", None, live=True), GraySource(10**6, live=True, delay_s=0.02), uri="steady")
    result: dict = {}
    runner = threading.Thread(target=lambda: result.setdefault("outcome", session.run()))
    runner.start()
    shown = {}
    try:
        for cycle in range(8):
            name, sink = f"cam{cycle}", RecordingSink()
            session.add(StreamSpec(name, name), GraySource(40).info, plan(name, 40), GraySource(40, delay_s=0.002),
                        [sink])
            wait_for(lambda s=sink: len(s.items) == 40)
            session.remove(name).result(timeout=20)
            shown[name] = len(sink.items)
        wait_for(lambda: len(session.slots) == 1 + 3)  # the steady camera and the 3 newest removed
        assert sorted(session.engine.streams) == sorted(session.engine.collectors) == [0, 6, 7, 8]
        assert session.snapshot().frames_read >= 8 * 40  # the run's totals still count every stream's frames
    finally:
        session.engine.stop_event.set()
        runner.join(30)
    outcome = result["outcome"]
    info = RunInfo(GraySource(1).info, "gray", "none", False, "fake", "cpu", "fp32", 2, "block")
    report = build_report(info, outcome, LoadTimes(LoadRecord(0.0, None, "not used"), 0.0, 0.0), 0.0, None)
    assert [r["name"] for r in report["streams"]] == ["steady", "cam5", "cam6", "cam7"]
    hidden = report["streams_not_listed"]
    assert hidden["count"] == 5 and hidden["frames_read"] == hidden["frames_shown"] == 5 * 40
    assert hidden["frames_written"] == sum(shown[f"cam{i}"] for i in range(5)) == 200
    assert outcome.frames_read == sum(r["frames"]["read"] for r in report["streams"]) + 200
