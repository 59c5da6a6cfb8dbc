"""Streams that are alive but wrong: frozen and blank pictures, judged on real photographs and loopback cameras."""

import json

import cv2
import numpy as np
import pytest

from stream.media.sample import pan_zoom, photo
from stream.pipeline.health import BLANK, FROZEN, HealthRules, HealthWatch
from tests.cameras import LoopbackCameras
from tests.conftest import run_cli

FPS = 30.0


def feed(watch: HealthWatch, frames, start: float = 0.0) -> list:
    return [watch.observe(f, start + i / FPS) for i, f in enumerate(frames)]


def jpeg_round_trip(image: np.ndarray) -> np.ndarray:
    return cv2.imdecode(cv2.imencode(".jpg", image)[1], cv2.IMREAD_COLOR)


def test_a_moving_picture_is_healthy_and_a_repeated_one_is_frozen_after_its_window():
    moving = pan_zoom(photo("coffee"), 640, 360, 90)
    watch = HealthWatch(HealthRules(frozen_after_s=1.0, blank_after_s=1.0))
    assert set(feed(watch, moving)) == {None}
    still = [jpeg_round_trip(moving[-1])] * 45  # 1.5 s of one frame, decoded alike each time
    states = feed(watch, still, start=3.0)
    # Frozen once 75 % of the last second's frame pairs are repeats (FROZEN_SHARE): 0.75 to 1 s into the still.
    assert states[:20] == [None] * 20 and set(states[31:]) == {FROZEN}
    moved = [watch.observe(f, 5.0 + i / FPS) for i, f in enumerate(moving[:6])]
    assert moved[:4] == [FROZEN] * 4 and moved[5] is None  # moving again: over half of the latest 10 pairs changed
    summary = watch.summary(5.0)
    assert summary.frozen_episodes == 1 and 1.0 < summary.frozen_s < 1.6 and summary.blank_episodes == 0  # until 5.0


def h264_decoded(frames: list[np.ndarray]) -> list[np.ndarray]:
    """`frames` through libx264 as a camera encodes them (zerolatency, 2 Mbit/s rate control, a keyframe a second)."""
    import io
    from fractions import Fraction

    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=30, options={"tune": "zerolatency", "preset": "veryfast",
                                                             "x264-params": "keyint=30"})
        stream.width, stream.height, stream.pix_fmt, stream.bit_rate = 640, 480, "yuv420p", 2_000_000
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts, frame.time_base = i, Fraction(1, 30)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    buf.seek(0)
    with av.open(buf) as decoded:
        return [f.to_ndarray(format="bgr24") for f in decoded.decode(video=0)]


def test_a_still_picture_behind_a_rate_controlled_h264_encoder_is_frozen_and_a_moving_one_is_not():
    # The encoder refreshes a still picture at every keyframe (a jump of about 1 level in 255): not motion.
    # (tests/test_rtsp.py has the same through GStreamer's x264enc and a real RTSP server.)
    views = pan_zoom(photo("coffee"), 640, 480, 60)
    decoded = h264_decoded(views + [views[-1]] * 150)
    watch = HealthWatch(HealthRules(frozen_after_s=2.0, blank_after_s=2.0))
    states = feed(watch, decoded)
    assert set(states[:60]) == {None} and set(states[60 + 70:]) == {FROZEN}
    assert watch.summary(len(decoded) / FPS).frozen_episodes == 1


def test_a_still_scene_with_sensor_noise_is_not_frozen():
    rng = np.random.default_rng(0)
    scene = photo("chelsea").astype(np.int16)
    noisy = [np.clip(scene + rng.normal(0, 2.0, scene.shape), 0, 255).astype(np.uint8) for _ in range(60)]
    watch = HealthWatch(HealthRules(frozen_after_s=0.5, blank_after_s=0.5))
    assert set(feed(watch, noisy)) == {None}


def test_black_or_covered_is_blank_and_a_dark_real_scene_is_not():
    rng = np.random.default_rng(1)
    black = [np.full((360, 640, 3), 16, np.uint8)] * 40  # a limited-range black test pattern
    covered = [np.clip(rng.normal(40, 1.5, (360, 640, 3)), 0, 255).astype(np.uint8) for _ in range(40)]
    dark = [(f * 0.15).astype(np.uint8) for f in pan_zoom(photo("astronaut"), 640, 360, 40)]
    for frames, expected in ((black, BLANK), (covered, BLANK), (dark, None)):
        watch = HealthWatch(HealthRules(frozen_after_s=0.5, blank_after_s=0.5))
        assert feed(watch, frames)[-1] == expected


def test_zero_turns_a_judgement_off():
    watch = HealthWatch(HealthRules(frozen_after_s=0, blank_after_s=0))
    assert not watch.rules.enabled
    watch = HealthWatch(HealthRules(frozen_after_s=0, blank_after_s=0.2))
    assert feed(watch, [np.zeros((72, 96, 3), np.uint8)] * 20)[-1] == BLANK


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_frozen_and_a_blank_camera_are_reported_and_their_labels_flagged(tmp_path):
    import threading
    import time

    with LoopbackCameras(3, fps=FPS) as cameras:
        def fault():  # once the run is going: camera 0 freezes, camera 1 goes black, camera 2 stays well
            log = tmp_path / "p.jsonl"
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 60):
                time.sleep(0.05)
            cameras.freeze(0, 3.0)
            cameras.blank(1, 3.0)

        threading.Thread(target=fault, daemon=True).start()
        result = run_cli(*[a for i in range(3) for a in ("--source", cameras.url(i))], "--model", "efficientnet_lite0",
                         "--backend", "onnxruntime", "--cache-dir", str(tmp_path / "c"),
                         "--frozen-after-s", "1", "--blank-after-s", "1", "--max-frames", "240",
                         "--predictions", str(tmp_path / "p.jsonl"), "--report", str(tmp_path / "r.json"))
    assert result.returncode == 0, result.stderr
    report = {s["name"]: s for s in json.loads((tmp_path / "r.json").read_text())["streams"]}
    names = list(report)
    lines = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    flagged = {name: {r.get("health") for r in lines if r["stream"] == name} for name in names}
    seq = "".join("F" if r.get("health") == FROZEN else "." for r in lines if r["stream"] == names[0])
    assert report[names[0]]["health"]["frozen_episodes"] == 1 and FROZEN in flagged[names[0]], seq
    assert 1.0 < report[names[0]]["health"]["frozen_s"] < 3.0
    assert report[names[1]]["health"]["blank_episodes"] == 1 and BLANK in flagged[names[1]]
    assert report[names[2]]["health"] == {"frozen_s": 0.0, "blank_s": 0.0, "frozen_episodes": 0, "blank_episodes": 0}
    assert flagged[names[2]] == {None}
