"""--clips: snapshots and event clips with pre-roll (stream.outputs.clips), on frames of real photographs.

Unit tests drive a ClipRecorder with a made-up event stream; the end-to-end ones run the CLI on a labelled video
(3 s of the cat photo, 3 s of the espresso, 3 s of the cat again, at 30 fps), where EfficientNet-Lite0 sees a cat
over 0-3 s and 6-9 s.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from stream.decisions.records import Event
from stream.decisions.rules import Rule, RuleSet
from stream.errors import UserError
from stream.media.sample import photo
from stream.outputs import clips as clips_module
from stream.outputs.clips import ClipRecorder, check_folder
from stream.outputs.preroll import Encoded, PreRoll
from tests.conftest import run_cli, start_cli

FPS = 30.0
PERIOD = 1 / FPS


def fitted(name: str, width: int, height: int, frames: int, zoom: float = 1.08) -> list[np.ndarray]:
    """The whole photo fitted to the frame's height on grey, zooming ≤ 8 % with a small drift: a stable label."""
    image = photo(name)
    h, w = image.shape[:2]
    out = []
    for i in range(frames):
        t = i / max(frames - 1, 1)
        scale = height / h * (1 + (zoom - 1) * t)
        dx = width / 2 - w * scale / 2 + 6 * np.sin(2 * np.pi * t)
        dy = height / 2 - h * scale / 2 + 4 * np.cos(2 * np.pi * t)
        matrix = np.array([[scale, 0, dx], [0, scale, dy]], np.float32)
        out.append(cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_AREA,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=(128, 128, 128)))
    return out


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    """10 s of small frames for the unit tests (the recorder neither knows nor cares what they show)."""
    views = fitted("chelsea", 320, 180, 60)
    return [views[i % 60] for i in range(300)]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    """cat 0-3 s, espresso 3-6 s, cat 6-9 s; 640×360 at 30 fps."""
    path = tmp_path_factory.mktemp("clips-media") / "cat-coffee-cat.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (640, 360))
    for name in ("chelsea", "coffee", "chelsea"):
        for view in fitted(name, 640, 360, 90):
            writer.write(view)
    writer.release()
    return path


def rules(*rules: Rule) -> RuleSet:
    return RuleSet(rules=rules)


def cat(name: str = "cat", pre: float = 1.0, post: float = 1.0, clip: bool = True, streams=("*",)) -> Rule:
    return Rule(name, ("*cat*", "tabby"), streams, 0.5, 0.0, clip, pre, post)


def event(kind: str, rule: str, index: int, stream: str = "cam", wall: str = "2026-12-03T10:00:00.000Z") -> Event:
    return Event(kind, rule, stream, "tabby", 0.9, index * PERIOD, index, wall)


def settle(recorder: ClipRecorder) -> None:
    while recorder._inbox:
        time.sleep(0.001)


def drive(recorder: ClipRecorder, frames, events: dict[int, list[Event]], stream: str = "cam",
          end: bool = True, paced: bool = True) -> dict[tuple[str, str, int], tuple]:
    """As the hub does: each frame, then that frame's events; what start/end returned, by (type, rule, frame).
    `paced`: each frame waits for the worker to take the last one, as a camera's rate lets it (a loop feeding
    frames as fast as it can would have most of them dropped, as it should)."""
    out = {}
    for i, image in enumerate(frames):
        image = image.copy()  # each frame its own array, as the capture thread hands them over
        if paced:
            settle(recorder)
        if recorder.wants(stream):
            recorder.frame(stream, i, i * PERIOD, image)
        for e in events.get(i, []):
            out[(e.type, e.rule, i)] = recorder.start(e, image) if e.type == "start" else recorder.end(e)
    if end:
        recorder.stream_ended(stream)
    return out


def decoded(path: str | Path) -> tuple[int, float, float]:
    """(frames, duration from the container, fps) as PyAV reads the clip."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        count = sum(1 for _ in container.decode(stream))
        duration = float(stream.duration * stream.time_base) if stream.duration else count / float(stream.average_rate)
        return count, duration, float(stream.average_rate)


def sidecar(clip: str | Path) -> dict:
    return json.loads(Path(clip).with_suffix(".json").read_text())


# ---- unit: the recorder on a made-up event stream


def test_a_clip_covers_pre_roll_event_and_post_roll_and_is_cut_at_the_streams_edges(tmp_path, frames):
    rec = ClipRecorder(str(tmp_path), rules(cat(pre=1.0, post=1.0)), 64)
    got = drive(rec, frames, {15: [event("start", "cat", 15, wall="2026-12-03T10:00:00.500Z")],  # 0.5 s: 0.5 s pre
                              45: [event("end", "cat", 45)],
                              120: [event("start", "cat", 120, wall="2026-12-03T10:00:04.000Z")],  # a whole clip
                              180: [event("end", "cat", 180)],
                              270: [event("start", "cat", 270, wall="2026-12-03T10:00:09.000Z")]})  # never ends
    rec.close()
    first, middle, last = (got[("start", "cat", i)][1] for i in (15, 120, 270))
    assert len({first, middle, last}) == 3
    assert Path(middle).name == "cam-20261203T100004.000Z-cat.mp4"
    expected = {first: (0, 45 + 30), middle: (120 - 30, 180 + 30), last: (270 - 30, 299)}
    for clip, (lo, hi) in expected.items():
        count, duration, fps = decoded(clip)
        assert fps == pytest.approx(FPS, rel=1e-3)
        assert abs(duration - (hi - lo + 1) * PERIOD) <= PERIOD, (clip, duration)
        assert count == hi - lo + 1
        meta = sidecar(clip)
        assert (meta["first_frame"], meta["last_frame"]) == (lo, hi)
        assert meta["stream"] == "cam" and meta["frames_dropped"] == 0
    assert got[("end", "cat", 180)] == middle
    assert [e["type"] for e in sidecar(middle)["events"]] == ["start", "end"]
    summary = rec.summary()
    assert summary["clips"] == 3 and summary["snapshots"] == 3 and summary["frames_dropped"] == 0


def test_overlapping_events_on_one_stream_share_one_clip(tmp_path, frames):
    rec = ClipRecorder(str(tmp_path), rules(cat("a", pre=1.0, post=0.5), cat("b", pre=2.0, post=1.0)), 64)
    got = drive(rec, frames, {60: [event("start", "a", 60)], 90: [event("start", "b", 90)],
                              120: [event("end", "a", 120)], 150: [event("end", "b", 150)],
                              240: [event("start", "a", 240, wall="2026-12-03T10:00:08.000Z")],
                              250: [event("end", "a", 250)]})
    rec.close()
    shared = got[("start", "a", 60)][1]
    assert got[("start", "b", 90)][1] == shared == got[("end", "a", 120)] == got[("end", "b", 150)]
    meta = sidecar(shared)
    assert [(e["type"], e["rule"]) for e in meta["events"]] == [("start", "a"), ("start", "b"), ("end", "a"),
                                                                  ("end", "b")]
    assert (meta["first_frame"], meta["last_frame"]) == (60 - 30, 150 + 30)  # a's pre-roll, b's post-roll
    assert got[("start", "a", 240)][1] != shared
    assert len(list(tmp_path.glob("*.mp4"))) == 2


def test_clips_and_snapshots_never_overwrite_and_a_stream_without_clip_rules_still_gets_snapshots(tmp_path, frames):
    (tmp_path / "cam-20261203T100000.000Z-cat.mp4").write_bytes(b"someone else's")
    (tmp_path / "snapshots").mkdir()
    (tmp_path / "snapshots" / "cam-cat-30.jpg").write_bytes(b"mine")
    rec = ClipRecorder(str(tmp_path), rules(cat(streams=("cam",)), cat("any", clip=False)), 64)
    assert rec.wants("cam") and not rec.wants("door")
    got = drive(rec, frames[:90], {30: [event("start", "cat", 30)], 60: [event("end", "cat", 60)]})
    door = drive(rec, frames[:40], {30: [event("start", "any", 30, stream="door")]}, stream="door")
    rec.close()
    snapshot, clip = got[("start", "cat", 30)]
    assert Path(clip).name == "cam-20261203T100000.000Z-cat-2.mp4"
    assert Path(snapshot).name == "cam-cat-30-2.jpg"
    assert (tmp_path / "cam-20261203T100000.000Z-cat.mp4").read_bytes() == b"someone else's"
    assert (tmp_path / "snapshots" / "cam-cat-30.jpg").read_bytes() == b"mine"
    assert cv2.imread(snapshot).shape == (180, 320, 3)
    door_snapshot, door_clip = door[("start", "any", 30)]
    assert door_clip is None and cv2.imread(door_snapshot).shape == (180, 320, 3)
    assert not list(tmp_path.glob(".*partial*")) and not list((tmp_path / "snapshots").glob(".*partial*"))


def test_the_hub_hands_start_events_of_a_stream_without_clip_rules_to_the_media(tmp_path, frames):
    """Only streams with clip rules feed a pre-roll, but every start event gets its snapshot."""
    from types import SimpleNamespace

    from stream.decisions.hub import Decisions
    from stream.decisions.tracker import Fired

    ruleset = rules(cat("clipped", streams=("cam",)), cat("noted", clip=False))
    rec = ClipRecorder(str(tmp_path), ruleset, 64)
    hub = Decisions(ruleset, [], rec)
    door = hub.open("door")
    door.pending.append(Fired("start", "noted", "tabby", 0.9, 1.0, 30))
    door.rendered(SimpleNamespace(frame=SimpleNamespace(index=30, time_s=1.0)), frames[30].copy())
    hub.close()
    (published,) = hub.events
    assert published.clip is None and cv2.imread(published.snapshot).shape == (180, 320, 3)
    assert "door" not in rec.summary()["streams"]  # no pre-roll kept for it


def test_the_pre_roll_buffer_stays_within_its_byte_bound(tmp_path, frames):
    bound_mb = 0.5  # about 20 of these frames; the rule asks for 60 s
    rec = ClipRecorder(str(tmp_path), rules(cat(pre=60.0, post=0.0)), bound_mb)
    got = drive(rec, frames, {250: [event("start", "cat", 250)], 260: [event("end", "cat", 260)]})
    rec.close()
    figures = rec.summary()["streams"]["cam"]
    assert 0 < figures["peak_buffer_bytes"] <= bound_mb * 1_000_000
    assert figures["evicted_by_bytes"] > 0 and figures["keeps_s"] == 61.0
    meta = sidecar(got[("start", "cat", 250)][1])
    assert 250 - 60 < meta["first_frame"] < 250  # the pre-roll is what the bound let it keep


def test_preroll_evicts_by_time_and_by_bytes_oldest_first():
    buffer = PreRoll(keep_s=1.05, max_bytes=1000)
    for i in range(100):
        buffer.add(Encoded(i, i * 0.1, np.zeros(90, np.uint8)))
        assert buffer.bytes <= 1000
    assert [f.index for f in buffer.frames] == list(range(89, 100))  # 1.05 s back from the newest
    assert buffer.evicted_by_bytes == 0 and buffer.fps(30.0) == pytest.approx(10.0)
    buffer.add(Encoded(100, 10.0, np.zeros(600, np.uint8)))
    assert buffer.evicted_by_bytes > 0 and buffer.bytes <= 1000 and buffer.newest().index == 100


def test_a_stalled_encoder_never_blocks_the_render_thread(tmp_path, frames, monkeypatch):
    """The worker is held still: every frame() still returns, the waiting frames stay bounded, the rest is counted."""
    rec = ClipRecorder(str(tmp_path), rules(cat()), 64)
    release = threading.Event()
    real = rec._handle
    monkeypatch.setattr(rec, "_handle", lambda m: (release.wait(30), real(m)))
    done = threading.Event()
    thread = threading.Thread(target=lambda: (drive(rec, frames, {}, end=False, paced=False), done.set()))
    thread.start()
    assert done.wait(20), "frame() blocked while the encoder was stuck"
    waiting = sum(isinstance(m, clips_module._Frame) for m in rec._inbox)
    assert waiting <= clips_module.HANDOFF_FRAMES
    assert rec.frames_dropped >= len(frames) - clips_module.HANDOFF_FRAMES - 1
    release.set()
    deadline = time.monotonic() + 20
    while rec.frames_encoded + rec.frames_dropped < len(frames) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert rec.frames_encoded + rec.frames_dropped == len(frames)
    rec.close()


def test_a_clip_is_never_visible_under_its_final_name_before_it_is_whole(tmp_path, frames):
    rec = ClipRecorder(str(tmp_path), rules(cat()), 64)
    got = drive(rec, frames[:60], {30: [event("start", "cat", 30)]}, end=False)
    clip = Path(got[("start", "cat", 30)][1])
    rec._send(clips_module._Forget("nothing"))  # a message after the clip's frames: once it is taken, they are written
    settle(rec)
    assert not clip.exists() and (tmp_path / f".{clip.stem}.partial.mp4").exists()
    rec.close()
    assert clip.exists() and clip.with_suffix(".json").exists()
    assert not (tmp_path / f".{clip.stem}.partial.mp4").exists()


def test_check_folder_creates_it_or_says_why_not_in_one_line(tmp_path):
    check_folder(str(tmp_path / "new" / "clips"))
    assert (tmp_path / "new" / "clips" / "snapshots").is_dir()
    (tmp_path / "file").write_text("x")
    for bad in (tmp_path / "file", tmp_path / "file" / "sub"):
        with pytest.raises(UserError) as info:
            check_folder(str(bad))
        assert "\n" not in str(info.value) and str(bad) in str(info.value)


# ---- end to end: the CLI on a labelled video


CAT_RULES = """
[smoothing]
enter = 0.3
exit = 0.2
[[rule]]
name = "cat"
labels = ["*cat*", "tabby"]
min_duration_s = 0.5
clip = true
pre_roll_s = {pre}
post_roll_s = 1
"""


def write_rules(tmp_path: Path, pre: float = 1.0) -> Path:
    path = tmp_path / "rules.toml"
    path.write_text(CAT_RULES.format(pre=pre))
    return path


def events_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_each_cat_interval_gets_one_clip_covering_its_event(tmp_path, labelled):
    out = tmp_path / "clips"
    result = run_cli("--source", str(labelled), "--model", "efficientnet_lite0", "--rules",
                     str(write_rules(tmp_path)), "--events", str(tmp_path / "ev.jsonl"), "--clips", str(out),
                     "--report", str(tmp_path / "report.json"), "--no-display")
    assert result.returncode == 0, result.stderr
    events = events_of(tmp_path / "ev.jsonl")
    starts = [e for e in events if e["type"] == "start"]
    assert len(starts) == 2, events
    for start in starts:
        end = next(e for e in events if e["type"] == "end" and e["time_s"] > start["time_s"])
        assert end["clip"] == start["clip"] and Path(start["snapshot"]).is_file()
        lo, hi = max(start["time_s"] - 1.0, 0.0), min(end["time_s"] + 1.0, 9.0 - PERIOD)
        count, duration, _ = decoded(start["clip"])
        assert abs(duration - (hi - lo + PERIOD)) <= PERIOD + 1e-6, (start, end, duration)
        meta = sidecar(start["clip"])
        assert [e["type"] for e in meta["events"]] == ["start", "end"] and meta["frames"] == count
    clips = json.loads((tmp_path / "report.json").read_text())["decisions"]["clips"]
    assert clips["clips"] == 2 and clips["snapshots"] == 2 and clips["frames_dropped"] == 0


def test_a_run_stopped_mid_event_finalises_its_clip(tmp_path, labelled):
    ev = tmp_path / "ev.jsonl"
    proc = start_cli("--source", str(labelled), "--loop", "--pace", "--model", "efficientnet_lite0",
                     "--rules", str(write_rules(tmp_path)), "--events", str(ev), "--clips", str(tmp_path / "clips"),
                     "--no-display")
    from tests.conftest import wait_for_lines

    wait_for_lines(proc, ev, 1)  # the first cat has started, and will not end for 2 s
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode in (0, 130)
    start, end = events_of(ev)[:2]
    assert start["type"] == "start" and end["type"] == "end"
    assert end["time_s"] < 2.9  # the stop ended it, not the espresso at 3 s
    count, duration, _ = decoded(start["clip"])
    meta = sidecar(start["clip"])
    assert count == meta["frames"] > 0 and meta["last_frame"] >= end["frame"] - 1
    assert [e["type"] for e in meta["events"]] == ["start", "end"]
    assert not list((tmp_path / "clips").glob(".*partial*"))


def test_a_long_run_keeps_the_pre_roll_within_a_small_bound(tmp_path, labelled):
    bound_mb = 1.0  # about 25 frames of this video against a 60 s pre-roll
    result = run_cli("--source", str(labelled), "--loop", "--max-frames", "2000", "--model", "efficientnet_lite0",
                     "--rules", str(write_rules(tmp_path, pre=60)), "--events", str(tmp_path / "ev.jsonl"),
                     "--clips", str(tmp_path / "clips"), "--clip-buffer-mb", str(bound_mb),
                     "--report", str(tmp_path / "report.json"), "--no-display", timeout=400)
    assert result.returncode == 0, result.stderr
    clips = json.loads((tmp_path / "report.json").read_text())["decisions"]["clips"]
    print(json.dumps({k: v for k, v in clips.items() if k != "clip_list"}))
    figures = clips["streams"][next(iter(clips["streams"]))]
    assert 0 < figures["peak_buffer_bytes"] <= bound_mb * 1_000_000
    assert figures["evicted_by_bytes"] > 0 and clips["clips"] >= 6  # the cat at a loop's end runs on into the next


def test_a_clip_plays_to_its_end_in_chromium(tmp_path, frames):
    from tests.browser import MISSING, open_chromium

    if MISSING is not None:
        pytest.skip(MISSING)
    pytest.importorskip("selenium")
    rec = ClipRecorder(str(tmp_path), rules(cat(pre=1.0, post=1.0)), 64)
    got = drive(rec, frames[:120], {45: [event("start", "cat", 45)], 75: [event("end", "cat", 75)]})
    rec.close()
    clip = Path(got[("start", "cat", 45)][1])
    page = tmp_path / "play.html"
    page.write_text(f'<video id="v" src="{clip.name}" muted playsinline></video>')
    driver = open_chromium(tmp_path / "profile")
    try:
        driver.get(page.as_uri())
        video = "document.getElementById('v')"

        def until(script: str, timeout: float = 20):
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                value = driver.execute_script(f"return {script}")
                if value:
                    return value
                time.sleep(0.1)
            raise AssertionError(f"timed out: {script}; error {driver.execute_script(f'return {video}.error')}")

        until(f"{video}.readyState >= 2 || {video}.error")
        assert driver.execute_script(f"return {video}.error") is None
        duration = driver.execute_script(f"return {video}.duration")
        assert duration == pytest.approx(91 * PERIOD, abs=PERIOD)  # frames 15 to 105: 1 s, the event, 1 s
        assert driver.execute_script(f"return {video}.videoWidth") == 320
        driver.execute_script(f"{video}.play()")
        until(f"{video}.ended")
        assert driver.execute_script(f"return {video}.currentTime") == pytest.approx(duration, abs=PERIOD)
    finally:
        driver.quit()


@pytest.mark.parametrize("bound_mb, keep_s", [(64.0, 4.0), (2.0, 4.0)])
def test_five_minutes_of_720p_stream_time_keep_the_pre_roll_within_its_bounds(bound_mb, keep_s):
    """9000 frames (5 min at 30 fps) of real 720p JPEGs (as the worker encodes them) through a stream's pre-roll:
    never more bytes than the bound, never more than keep_s of stream time, and the size it settles at is
    what 720p costs per second (the README's figure)."""
    views = fitted("coffee", 1280, 720, 12) + fitted("chelsea", 1280, 720, 12)
    jpegs = [cv2.imencode(".jpg", v, [cv2.IMWRITE_JPEG_QUALITY, 80])[1] for v in views]
    buffer = PreRoll(keep_s=keep_s, max_bytes=int(bound_mb * 1_000_000))
    held = []
    for i in range(9000):
        buffer.add(Encoded(i, i * PERIOD, jpegs[i % len(jpegs)]))
        assert buffer.bytes <= buffer.max_bytes
        assert buffer.frames[-1].time_s - buffer.frames[0].time_s <= keep_s
        held.append(buffer.bytes)
    assert buffer.peak_bytes <= bound_mb * 1_000_000
    settled = max(held[-3000:])
    if bound_mb == 64.0:  # the time bound holds it: about keep_s × 30 frames of 720p JPEG
        assert buffer.evicted_by_bytes == 0 and settled < 20_000_000
        assert len(buffer.frames) == int(keep_s * FPS) + 1
    else:  # the byte bound holds it, for the whole 5 minutes
        assert buffer.evicted_by_bytes > 8000 and settled <= 2_000_000
