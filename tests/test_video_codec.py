"""Annotated video output: H.264 that browsers play (frames in = frames decoded), mp4v and Motion-JPEG by choice."""

from __future__ import annotations

import json

import av
import cv2
import numpy as np
import pytest

from stream.errors import UserError
from stream.media.sample import pan_zoom, photo
from stream.outputs import video_writer
from stream.outputs.sinks import VideoFileSink
from stream.outputs.video_writer import choose_codec
from tests.conftest import read_all_frames, run_cli


def write(path, codec, frames, size=(640, 360)):
    sink = VideoFileSink(str(path), 30.0, *size, codec)
    for frame in frames:
        sink.write(None, frame)
    sink.close()
    return sink


def decoded(path) -> tuple[str, str | None, list[np.ndarray]]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        images = [f.to_ndarray(format="bgr24") for f in container.decode(stream)]
        return stream.codec_context.name, stream.codec_context.pix_fmt, images


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255**2 / mse)


@pytest.fixture(scope="module")
def views():
    return pan_zoom(photo("chelsea"), 640, 360, 45)


def test_mp4_defaults_to_h264_yuv420p_index_first_every_frame_faithful(tmp_path, views):
    path = tmp_path / "out.mp4"
    assert write(path, "auto", views).summary().codec == "h264"
    codec, pix_fmt, images = decoded(path)
    assert (codec, pix_fmt, len(images)) == ("h264", "yuv420p", len(views))
    data = path.read_bytes()
    assert 0 <= data.find(b"moov") < data.find(b"mdat")  # +faststart: a browser can start before the end
    assert min(psnr(a, b) for a, b in zip(images, views, strict=True)) > 30
    assert len(read_all_frames(path)) == len(views)  # OpenCV (the tests' reader) decodes it too


def test_odd_sizes_lose_a_pixel_for_yuv420p(tmp_path, views):
    odd = [cv2.resize(v, (641, 361)) for v in views[:10]]
    path = tmp_path / "odd.mp4"
    write(path, "h264", odd, size=(641, 361))
    _, _, images = decoded(path)
    assert len(images) == 10 and images[0].shape == (360, 640, 3)
    cut, rescaled = odd[5][:360, :640], cv2.resize(odd[5], (640, 360), interpolation=cv2.INTER_AREA)
    assert psnr(images[5], cut) > psnr(images[5], rescaled) + 1  # cut, not rescaled


@pytest.mark.parametrize("name,codec,expected", [("a.mp4", "mp4v", "mpeg4"), ("a.avi", "auto", "mjpeg"),
                                                 ("a.mkv", "mjpg", "mjpeg"), ("a.avi", "h264", "h264")])
def test_every_codec_keeps_every_frame(tmp_path, views, name, codec, expected):
    path = tmp_path / name
    write(path, codec, views[:20])
    got, _, images = decoded(path)
    assert (got, len(images)) == (expected, 20)
    # Each frame is its own: the encoder wraps each frame's I420 array without copying it, so an array reused
    # or freed before the encoder let go of it would show here as another frame's (or garbage) pixels.
    scores = [[psnr(image, view) for view in views[:20]] for image in images]
    assert all(max(row) == row[i] and row[i] > 30 for i, row in enumerate(scores))


def test_impossible_combinations_are_one_line():
    with pytest.raises(UserError, match="cannot be written into .mp4"):
        choose_codec("x.mp4", "mjpg")
    with pytest.raises(UserError, match="unsupported extension"):
        choose_codec("x.webm", "auto")


def test_without_libx264_mp4_falls_back_to_mp4v_and_says_why(monkeypatch, tmp_path):
    monkeypatch.setattr(video_writer, "h264_unavailable", lambda: "this PyAV build has no libx264 encoder")
    choice = choose_codec("x.mp4", "auto")
    assert choice.codec == "mp4v" and "no libx264" in choice.note and "browsers" in choice.note
    with pytest.raises(UserError, match="--codec h264: this PyAV build has no libx264"):
        choose_codec("x.mp4", "h264")


@pytest.mark.slow
def test_the_cli_writes_h264_and_reports_every_frame(cat_clip, tmp_path):
    out, report = tmp_path / "out.mp4", tmp_path / "r.json"
    result = run_cli("--source", str(cat_clip), "--weights", "random", "--output", str(out), "--report", str(report),
                     "--no-display")
    assert result.returncode == 0, result.stderr
    codec, _, images = decoded(out)
    written = json.loads(report.read_text())["frames"]["written"]
    assert codec == "h264" and written == len(images) == 24


def test_a_bad_codec_flag_is_one_line(tmp_path):
    result = run_cli("--source", "x.mp4", "--output", str(tmp_path / "o.mp4"), "--codec", "mjpg")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "cannot be written into .mp4" in result.stderr


@pytest.mark.parametrize(("cores", "threads"), [(2, 1), (4, 1), (16, 0)])
def test_codecs_run_one_thread_on_a_small_box_and_their_own_choice_on_a_big_one(tmp_path, monkeypatch, views,
                                                                                 cores, threads):
    """Frame threads buy wall time with CPU the model needs on a small box (stream.cores.codec_threads)."""
    from stream import cores as cores_module
    from stream.media.sources import open_source

    monkeypatch.setattr(cores_module, "available_cores", lambda: cores)
    path = tmp_path / "out.mp4"
    encoder = video_writer.PyAvEncoder(str(path), "h264", 30.0, 640, 360)
    assert encoder._stream.codec_context.thread_count == threads
    for v in views:
        encoder.write(cv2.resize(v, (640, 360)))
    encoder.close()
    source = open_source(str(path))
    try:
        decoding = int(source._cap.get(cv2.CAP_PROP_N_THREADS))
        plain = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)  # FFmpeg's own choice
        assert decoding == (1 if threads == 1 else int(plain.get(cv2.CAP_PROP_N_THREADS)))
        plain.release()
        assert sum(1 for _ in iter(source.read, None)) == len(views)
    finally:
        source.close()
