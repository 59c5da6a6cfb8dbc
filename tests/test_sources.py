import cv2
import numpy as np
import pytest

from stream.errors import UserError
from stream.media.sample import photo
from stream.media.sources import open_source
from tests.conftest import read_all_frames


def read_until_end(source) -> list:
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame)
    return frames


def test_video_file_yields_every_frame_once_with_indices_and_times(cat_clip):
    source = open_source(str(cat_clip))
    frames = read_until_end(source)
    source.close()
    assert source.info.kind == "file" and not source.info.live
    assert [f.index for f in frames] == list(range(24)) == list(range(source.info.frame_count))
    assert frames[1].time_s == pytest.approx(1 / 30)
    assert all(b.captured_at >= a.captured_at for a, b in zip(frames, frames[1:], strict=False))
    direct = read_all_frames(cat_clip)
    assert all(np.array_equal(f.image, d) for f, d in zip(frames, direct, strict=True))


def test_image_folder_gives_each_readable_image_once(tmp_path):
    for i, name in enumerate(["chelsea", "coffee"]):
        cv2.imwrite(str(tmp_path / f"{i}.png"), photo(name))
    (tmp_path / "2.jpg").write_bytes(b"not really a jpeg")
    (tmp_path / "notes.txt").write_text("ignored")
    source = open_source(str(tmp_path))
    frames = read_until_end(source)
    assert [f.index for f in frames] == [0, 1]
    assert frames[0].image.shape == photo("chelsea").shape
    assert source.skipped == [f"{tmp_path / '2.jpg'} (not a PNG, JPEG, BMP, TIFF or WebP image with a readable header)"]


def test_loop_rewinds_a_file_and_keeps_counting(cat_clip):
    source = open_source(str(cat_clip))
    first_pass = read_until_end(source)
    assert source.rewind()
    again = source.read()
    assert again.index == len(first_pass)
    assert np.array_equal(again.image, first_pass[0].image)


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda p: str(p / "missing.mp4"), "no such file"),
        (lambda p: (p / "fake.mp4").write_text("hello") and str(p / "fake.mp4"), "not a video"),
        (lambda p: (p / "empty").mkdir() or str(p / "empty"), "holds no images"),
    ],
)
def test_bad_sources_are_user_errors(tmp_path, make, message):
    with pytest.raises(UserError, match=message):
        open_source(make(tmp_path))


def test_sample_clip_is_made_once_and_cached(tmp_path):
    from stream.media.sample import sample_clip

    path = sample_clip(tmp_path)
    stamp = path.stat().st_mtime_ns
    source = open_source(str(path))
    assert (source.info.width, source.info.height, source.info.fps, source.info.frame_count) == (1280, 720, 30.0, 180)
    source.close()
    assert sample_clip(tmp_path) == path and path.stat().st_mtime_ns == stamp
