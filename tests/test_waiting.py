"""The waiting streams' retry thread alone (stream.session.waiting), with a join that fails as told; the service
around it is tests/test_service.py's."""

import threading
import time

import pytest

from stream.errors import NotReady, UserError
from stream.media.streams import StreamSpec
from stream.pipeline.capture import Reconnect
from stream.session import waiting as waiting_module
from stream.session.waiting import WaitingStreams, waits_when_down


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    monkeypatch.setattr(waiting_module, "RETRY", Reconnect(enabled=True, first_s=0.02, cap_s=0.05, jitter=0.0))


def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_cameras_and_urls_wait_and_files_do_not():
    assert waits_when_down("0") and waits_when_down("rtsp://cam/s1") and waits_when_down("HTTP://cam/x.mjpg")
    assert not waits_when_down("clips/door.mp4") and not waits_when_down("/data/frames")


def test_a_camera_is_tried_until_it_joins_and_its_last_error_is_kept(capsys):
    streams = WaitingStreams(seed=1)
    streams.add(StreamSpec("rtsp://cam/door", "door"), "cannot open stream rtsp://cam/door", listed=True)
    tries = []

    def join(entry):
        tries.append(entry.spec.name)
        if len(tries) < 3:
            raise UserError(f"try {len(tries)} failed")

    streams.start(join, lambda name: None)
    wait_for(lambda: not streams.names())
    streams.stop()
    assert tries == ["door"] * 3
    assert "'door' answered after 3 attempt(s)" in capsys.readouterr().out


def test_the_listing_keeps_attempts_and_the_error_and_hides_credentials():
    streams = WaitingStreams()
    streams.add(StreamSpec("rtsp://admin:pa55word@cam/s1", "gate"), "cannot open stream rtsp://***:***@cam/s1",
                listed=False)
    failed = threading.Event()

    def join(entry):
        failed.set()
        raise RuntimeError("a bug, not a camera")

    streams.start(join, lambda name: None)
    wait_for(failed.is_set)
    wait_for(lambda: streams.listing()[0]["attempts"] >= 3)  # a fault is one more attempt, not the thread's end
    streams.stop()
    [row] = streams.listing()
    assert row["state"] == "waiting" and "pa55word" not in str(row) and row["error"].startswith("RuntimeError")
    assert streams.listed() == []  # given with --source: not for the sources file


def test_a_camera_given_up_while_its_attempt_is_in_flight_leaves_again():
    streams = WaitingStreams()
    streams.add(StreamSpec("rtsp://cam/yard", "yard"), "down", listed=True)
    inside, release, left = threading.Event(), threading.Event(), []

    def join(entry):
        inside.set()
        release.wait(5)  # the open blocks, as a slow camera's does

    streams.start(join, left.append)
    wait_for(inside.is_set)
    assert streams.drop("yard")  # DELETE /api/streams/yard meanwhile
    release.set()
    wait_for(lambda: left == ["yard"])
    streams.stop()


def test_a_stop_does_not_wait_for_an_attempt_in_flight():
    streams = WaitingStreams()
    streams.add(StreamSpec("rtsp://cam/dead", "dead"), "down", listed=True)
    inside = threading.Event()

    def join(entry):
        inside.set()
        time.sleep(3)  # a dead camera's open timeout
        raise NotReady("the run has ended")

    streams.start(join, lambda name: None)
    wait_for(inside.is_set)
    asked = time.monotonic()
    streams.stop()
    assert time.monotonic() - asked < 1.0
    assert streams.names() == {"dead"}


def test_cameras_that_accept_and_never_answer_do_not_hold_up_one_that_is_back(monkeypatch):
    monkeypatch.setattr(waiting_module, "PARALLEL", 4)
    streams = WaitingStreams()
    for k in range(6):  # more than PARALLEL: the back one is in the second group of the round
        streams.add(StreamSpec(f"rtsp://cam/dead{k}", f"dead{k}"), "down", listed=True)
    streams.add(StreamSpec("rtsp://cam/back", "back"), "down", listed=True)
    release, tried = threading.Event(), []

    def join(entry):
        tried.append(entry.spec.name)
        if entry.spec.name.startswith("dead"):
            release.wait(2.0)  # each open hangs for its timeout
            raise UserError("timed out")

    streams.start(join, lambda name: None)
    started = time.monotonic()
    wait_for(lambda: "back" not in streams.names(), timeout=10)
    took = time.monotonic() - started
    release.set()
    streams.stop()
    # One after another, the back camera waited behind six 2 s timeouts (12 s); in groups of four, behind one.
    assert took < 3.5, took
    assert streams.names() == {f"dead{k}" for k in range(6)}
