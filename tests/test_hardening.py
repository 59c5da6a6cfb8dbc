"""Hostile or careless input, as a user or an attacker on loopback would give it: outputs that would replace inputs,
credentials in URIs, unsafe stream names, markup in names, numbers that are no settings, and a supervisor's SIGKILL
after SIGTERM. Each case gives one line and a non-zero exit (or is harmless), never a traceback, a hang or a lost
file."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from stream.cli import main
from stream.config import Config, load_toml, merge
from stream.errors import UserError
from stream.frames import Classified, Frame, Prediction, StageTimes, TopK
from stream.media.sources import SourceInfo
from stream.media.streams import check_name, load_sources_file, name_from_uri
from stream.observe.dashboard import build_dashboard
from stream.observe.runinfo import RunInfo
from stream.outputs.sinks import PredictionsLog, VideoFileSink
from stream.pipeline.inference import Batching
from stream.pipeline.preprocess import Preprocessor
from stream.redact import mask_uri, scrub
from stream.session.plan import StreamPlan
from tests.cameras import Gate, LoopbackCameras
from tests.conftest import read_all_frames, run_cli, start_cli, write_h264
from tests.sessions import add, local_session
from tests.test_dashboard import render, snapshot
from tests.test_pipeline import CATEGORIES, SPEC, GrayBackend, GraySource, NullUi, RecordingSink

MODEL = ["--model", "efficientnet_lite0", "--backend", "onnxruntime"]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- outputs never replace inputs


@pytest.fixture
def vids(tmp_path, cat_clip):
    folder = tmp_path / "vids"
    folder.mkdir()
    for name in ("a", "b"):
        (folder / f"{name}.mp4").write_bytes(cat_clip.read_bytes())
    return folder


def clash_cases(vids: Path) -> dict[str, list[str]]:
    a, b = str(vids / "a.mp4"), str(vids / "b.mp4")
    os.symlink(a, vids.parent / "link.mp4")
    os.link(a, vids.parent / "hard.mp4")
    return {
        "both inputs by {stream}": ["--source", a, "--source", b, "--output", str(vids / "{stream}.mp4")],
        "the input itself": ["--source", a, "--output", a],
        "through a symlink": ["--source", a, "--output", str(vids.parent / "link.mp4")],
        "through a hard link": ["--source", a, "--predictions", str(vids.parent / "hard.mp4")],
        "predictions on an input": ["--source", a, "--source", b, "--predictions", str(vids / "{stream}.mp4")],
        "report on an input": ["--source", a, "--source", b, "--report", b],
        "report on the predictions": ["--source", a, "--predictions", str(vids.parent / "p.json"),
                                      "--report", str(vids.parent / "p.json")],
    }


def test_an_output_that_would_replace_an_input_or_another_output_is_refused_before_anything_opens(vids, capsys):
    before = {p.name: digest(p) for p in vids.iterdir()}
    for case, args in clash_cases(vids).items():
        assert main([*args, "--no-dashboard"]) == 2, case
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "must never replace" in err, (case, err)
    assert {p.name: digest(p) for p in vids.iterdir()} == before  # byte-identical, and nothing new beside them
    assert not (vids.parent / "p.json").exists()


def test_a_joining_stream_may_not_write_over_a_stream_already_in_the_run(tmp_path, cat_clip):
    from stream.media.streams import StreamSpec
    from stream.outputs.kinds import Outputs

    outputs = Outputs({"output": str(tmp_path / "{stream}.avi")})
    outputs.check([StreamSpec(str(cat_clip), "cat")])
    outputs.check([StreamSpec(str(cat_clip), "cat")])  # the same stream checked again (a retried join) is fine
    with pytest.raises(UserError, match="is the input of stream 'cat'"):  # its output would replace cat's input
        Outputs({"output": str(cat_clip)}).check([StreamSpec(str(cat_clip), "cat")])
    joined = tmp_path / "cat.avi"
    with pytest.raises(UserError, match="already the --output file of stream 'cat'"):
        outputs.check([StreamSpec(str(joined), "x")])  # reading a file another stream writes is refused too...
    with pytest.raises(UserError, match="is the input of stream 'late'"):
        outputs.check([StreamSpec(str(tmp_path / "late.avi"), "late")])  # ...and writing the file one reads


def classified(i: int) -> Classified:
    frame = Frame(i, np.zeros((64, 64, 3), np.uint8), time.perf_counter(), i / 30)
    return Classified(frame, Prediction(i, [TopK(0, "cat", 0.9)], StageTimes(1.0, 1.0, 1.0, 1), time.perf_counter()))


def test_an_existing_output_is_replaced_whole_when_complete_never_half_overwritten(tmp_path):
    video, log = tmp_path / "old.avi", tmp_path / "old.jsonl"
    video.write_bytes(b"the previous run's video")
    log.write_text("the previous run's log\n")
    sink, predictions = VideoFileSink(str(video), 30.0, 64, 64, "mjpg"), PredictionsLog(str(log))
    handle = predictions.for_stream("s")
    for i in range(10):
        sink.write(classified(i), np.full((64, 64, 3), 20 * i, np.uint8))
        handle.write(classified(i), None)
    # Mid-run (or killed now): the old files are whole, the new ones grow beside them.
    assert video.read_bytes() == b"the previous run's video" and log.read_text() == "the previous run's log\n"
    partial = sorted(p.name for p in tmp_path.iterdir() if ".partial-" in p.name)
    assert len(partial) == 2 and all(p.startswith(".old.partial-") for p in partial), partial
    sink.close()
    handle.close()
    assert len(read_all_frames(video)) == 10 and len(log.read_text().splitlines()) == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.avi", "old.jsonl"]


# ---- stream names


@pytest.mark.parametrize("name", [".", "..", "a/b", "", "x" * 65, "caf\u00e9", "a b"])
def test_a_stream_name_outside_the_safe_alphabet_is_one_line(tmp_path, name):
    sources = tmp_path / "s.toml"
    sources.write_text(f"[[source]]\nuri = 'x.mp4'\nname = {json.dumps(name)}\n")
    with pytest.raises(UserError, match="stream name") as err:
        load_sources_file(str(sources))
    assert "\n" not in str(err.value)


@given(st.one_of(st.text(max_size=300), st.builds("{}://{}".format, st.sampled_from(["rtsp", "http"]),
                                                   st.text(max_size=60))))
@example("\u00b2")  # str.isdigit() takes "²": it was made a camera index ("camera²"), which int() refuses
def test_a_name_made_from_any_uri_is_safe_in_a_path(uri):
    name = name_from_uri(uri)
    assert check_name(name, "made") == name and "/" not in name and name not in (".", "..")


# ---- credentials


def test_a_name_made_from_a_uri_carries_no_credential():
    assert "pw9xq" not in name_from_uri("rtsp://cam:554/user=admin&password=pw9xq&channel=1")
    assert "s3cret" not in name_from_uri("rtsp://admin:s3cret@cam:notaport/x")


def test_mask_uri_hides_userinfo_and_secret_query_values():
    assert mask_uri("rtsp://admin:hunter22@10.0.0.7:554/s1") == "rtsp://***:***@10.0.0.7:554/s1"
    assert mask_uri("http://cam/x.mjpg?token=abc123&fps=5") == "http://cam/x.mjpg?token=***&fps=5"
    assert mask_uri("clip.mp4") == "clip.mp4"
    assert mask_uri("rtsp://cam/user=admin&password=pw9&channel=1") == "rtsp://cam/user=admin&password=***&channel=1"
    assert "hunter22" not in scrub("lost rtsp://admin:hunter22@cam after 3 frames")


@given(st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="@/:?#[]"), min_size=3,
               max_size=20))
def test_any_password_is_masked_in_the_uri_and_in_free_text(password):
    uri = f"rtsp://user:{password}@192.0.2.1:554/stream"
    assert password not in mask_uri(uri).split("@", 1)[0]
    assert password not in scrub(f"cannot open {uri}: {password}")


def test_a_credential_is_not_printed_when_its_camera_cannot_be_opened(capsys):
    status = main(["--source", "http://viewer:pw-Zq81xv@127.0.0.1:9/cam.mjpg?token=tk-77Yqa", "--no-dashboard"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and "***" in err
    assert "pw-Zq81xv" not in err and "tk-77Yqa" not in err


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_camera_credentials_appear_in_no_output_file_line_or_report(tmp_path):
    secret, token = "pw-Hx4a9k", "tk-Lm93pq"
    with LoopbackCameras(2, fps=30.0) as cameras:
        urls = [cameras.url(i).replace("http://", f"http://admin:{secret}@") + f"?token={token}" for i in range(2)]
        result = run_cli(*[a for url in urls for a in ("--source", url)], *MODEL, "--cache-dir", str(tmp_path / "c"),
                         "--max-frames", "40", "--output", str(tmp_path / "{stream}.avi"),
                         "--predictions", str(tmp_path / "p.jsonl"), "--report", str(tmp_path / "r.json"))
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert [s["source"]["uri"].split("@")[0] for s in report["streams"]] == ["http://***:***"] * 2
    texts = {"stdout": result.stdout, "stderr": result.stderr}
    texts |= {p.name: p.read_bytes().decode("latin-1") for p in tmp_path.iterdir() if p.is_file()}
    for where, text in texts.items():
        assert secret not in text and token not in text, where


# ---- markup and numbers


def test_markup_in_a_uri_a_model_or_a_label_is_shown_as_written():
    source = SourceInfo("clips/x[/y].mp4", "file", False, 30.0, 600, 1280, 720)
    run = RunInfo(source, "m[/bold]", "w[red]", False, "torch", "cpu", "fp32", 4, "block")
    text = render(build_dashboard(snapshot(top=[TopK(1, "[/] label [link=x]", 0.9)]), run))
    assert "clips/x[/y].mp4" in text and "[/] label [link=x]" in text and "m[/bold]" in text


NUMERIC = {"status_every": "float", "warmup": "int", "target_fps": "float", "batch": "int", "queue_size": "int",
           "batch_timeout_ms": "float", "max_staleness_ms": "float", "latency_budget_ms": "float",
           "max_frames": "int", "max_buffer_mb": "float", "max_image_pixels": "int"}


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(NUMERIC)), st.one_of(st.floats(), st.integers(), st.text(max_size=8), st.booleans()))
def test_any_numeric_setting_is_a_value_in_range_or_one_line(key, value):
    try:
        cfg = merge({}, {key: value})
    except UserError as exc:
        assert "\n" not in str(exc)
        return
    got = getattr(cfg, key)
    assert isinstance(got, (int, float)) and got == got and abs(got) != float("inf")


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=200))
def test_any_config_or_sources_file_gives_settings_or_one_line(tmp_path, text):
    path = tmp_path / "any.toml"
    path.write_text(text, encoding="utf-8")
    for parse in (load_toml, load_sources_file):
        try:
            parse(str(path))
        except UserError as exc:
            assert "\n" not in str(exc).strip()


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(st.sampled_from(["--status-every", "--warmup", "--target-fps", "--batch", "--max-frames", "--queue-size",
                        "--max-buffer-mb", "--max-image-pixels", "--batch-timeout-ms"]),
       st.one_of(st.sampled_from(["nan", "inf", "-inf", "1e20", "-1", "0", "", "0x10", "1_000"]),
                 st.text(max_size=6)))
def test_any_numeric_flag_gives_a_run_or_one_line(tmp_path, capsys, flag, text):
    # --source names a missing file: a flag that passes leaves the run to fail on it, in one line, before any model.
    capsys.readouterr()
    try:
        status = main(["--source", str(tmp_path / "missing.mp4"), f"{flag}={text}", "--no-dashboard"])
    except SystemExit as exit_:  # argparse's own refusal (OneLineParser): one line too
        status = exit_.code
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and "Traceback" not in err


def test_the_lab_refuses_numbers_that_are_no_setting(capsys):
    for args in (["bench", "--warmup", "100000000000"], ["bench", "--target-fps", "nan"], ["eval", "--warmup", "inf"]):
        with pytest.raises(SystemExit) as exit_:
            main(args)
        assert exit_.value.code == 2 and capsys.readouterr().err.count("\n") == 1


def test_the_labs_own_pipeline_flags_pass_the_run_checks():
    from stream.lab.runner import PIPELINE_FLAGS

    # An over-tight bound once made every bench verdict fall back to model-only figures, silently.
    status_every = float(PIPELINE_FLAGS[PIPELINE_FLAGS.index("--status-every") + 1])
    assert merge({}, {"status_every": status_every, "display": "off", "dashboard": "off"}).status_every == status_every


def test_a_sane_config_still_passes():
    assert merge({}, {"status_every": 0.5, "warmup": 0, "target_fps": 15.0}).status_every == 0.5
    assert isinstance(Config(), Config)


# ---- shutdown: the sinks are closed before the cameras are waited for


class StuckCamera(GraySource):
    """A live source that delivers a few frames, then blocks in read() as a camera whose network died does."""

    def __init__(self, frames: int = 5) -> None:
        super().__init__(frames, live=True, delay_s=0.02)
        self.release, self.stuck = threading.Event(), threading.Event()

    def read(self):
        if self._next >= self.count:
            self.stuck.set()
            self.release.wait(60)
            return None
        return super().read()


class Requests:
    """The CLI's interrupts as the session reads them: a SIGTERM requested from a test."""

    def __init__(self) -> None:
        self.requested: str | None = None

    def pending(self) -> str | None:
        return self.requested

    @contextlib.contextmanager
    def deferred(self):
        yield


class TimedSink(RecordingSink):
    def close(self):
        self.closed_at = time.monotonic()
        super().close()


def test_a_stop_closes_the_sinks_while_a_stuck_camera_is_still_being_waited_for():
    session = local_session(GrayBackend(), Preprocessor(SPEC), CATEGORIES, Batching(2, 0.02), NullUi())
    file_sink, camera = TimedSink(), StuckCamera()
    add(session, StreamPlan("file", False, 4, 30.0, False, 100_000), GraySource(100_000, delay_s=0.005),
        [file_sink], uri="file")
    add(session, StreamPlan("cam", True, 2, 30.0, True, None), camera, [RecordingSink()], uri="cam")
    requests, result = Requests(), {}
    runner = threading.Thread(target=lambda: result.setdefault("outcome", session.run(requests)))
    runner.start()
    try:
        assert camera.stuck.wait(30) and file_sink.items
        asked = time.monotonic()
        requests.requested = "SIGTERM"
        deadline = asked + 8
        while not file_sink.closed and time.monotonic() < deadline:
            time.sleep(0.02)
        assert file_sink.closed, "the file's sink waited for the stuck camera"
        assert file_sink.closed_at - asked < 4.0
    finally:
        camera.release.set()
        runner.join(30)
    assert result["outcome"].status == "interrupted"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigkill_ten_seconds_after_sigterm_still_leaves_a_playable_mp4(tmp_path):
    clip = write_h264(tmp_path / "long.mp4", "coffee", 900)  # 30 s at its own pace: still running at the stop
    with LoopbackCameras(1, fps=15.0) as cameras:
        gate = Gate(cameras.server.server_address[1])
        try:
            out = tmp_path / "out"
            out.mkdir()
            proc = start_cli("--source", str(clip), "--source", gate.url("cam0.mjpg"), *MODEL, "--pace",
                             "--cache-dir", str(tmp_path / "c"), "--output", str(out / "{stream}.mp4"),
                             "--predictions", str(tmp_path / "p.jsonl"), "--no-dashboard")
            deadline = time.monotonic() + 120
            log = tmp_path / "p.jsonl"
            while time.monotonic() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 60):
                assert proc.poll() is None, proc.communicate()
                time.sleep(0.1)
            gate.hang()  # the camera's read now blocks until its timeout, then its reconnect blocks in the open
            while time.monotonic() < deadline and gate.hung_connections == 0:
                time.sleep(0.05)
            assert gate.hung_connections, "the camera was never reconnected"
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except Exception:  # noqa: BLE001 - what a supervisor does after its grace period
                proc.kill()
                proc.wait(10)
        finally:
            gate.close()
    frames = read_all_frames(out / "long.mp4")
    assert len(frames) >= 50, f"the mp4 holds {len(frames)} readable frames"
