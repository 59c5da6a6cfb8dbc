"""Huge images are refused from their header, before a decoder allocates: --max-image-pixels."""

import json
import struct
import subprocess
import sys
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from stream.errors import UserError
from stream.media.headers import image_size
from stream.media.sample import photo
from stream.media.sources import open_source
from stream.media.stills import read_images
from tests.conftest import ROOT, run_cli

SIDE = 20_000  # 400 M pixels: 1.2 GB decoded; as a 1-bit PNG of zeros, 50 kB on disk


def bomb_png(path, width: int = SIDE, height: int = SIDE):
    """A 1-bit greyscale PNG of zeros, written by hand row by row (cheap in time and memory)."""
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed pixels
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


def measured_open(uri: str) -> dict:
    """open_source in a fresh process: its time, its peak RSS growth (ru_maxrss) and its error."""
    code = """
import json, resource, sys, time
from stream.errors import UserError
from stream.media.sources import open_source
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
try:
    open_source(sys.argv[1])
    error = None
except UserError as exc:
    error = str(exc)
print(json.dumps({"s": time.perf_counter() - started, "error": error,
                  "rss_growth_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024}))
"""
    done = subprocess.run([sys.executable, "-c", code, uri], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("ext,params", [(".png", []), (".jpg", []), (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
                                        (".bmp", []), (".tif", []), (".webp", []),
                                        (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101])])  # 101: lossless
def test_the_header_gives_the_size_the_decoder_will(tmp_path, ext, params):
    path = tmp_path / f"view{ext}"
    cv2.imwrite(str(path), photo("coffee")[:301, :457], params)
    assert image_size(path) == (457, 301) == Image.open(path).size


@pytest.mark.parametrize("fmt,options", [("JPEG", {"exif": b"Exif\x00\x00" + bytes(30_000)}),
                                         ("TIFF", {"big_tiff": True}), ("WEBP", {"exif": b"Exif\x00\x00abc"})])
def test_the_header_is_found_past_metadata_and_in_bigtiff(tmp_path, fmt, options):
    path = tmp_path / f"view.{fmt.lower()}"
    Image.fromarray(photo("coffee")[:301, :457, ::-1].copy()).save(path, fmt, **options)
    assert image_size(path) == (457, 301)


def test_a_cut_or_foreign_header_gives_no_size(tmp_path):
    for name, data in (("cut.png", b"\x89PNG\r\n\x1a\n"), ("cut.jpg", b"\xff\xd8\xff"), ("text.png", b"hello")):
        (tmp_path / name).write_bytes(data)
        assert image_size(tmp_path / name) is None


def test_a_20000_squared_png_is_refused_in_under_a_second_without_decoding(tmp_path):
    bomb = bomb_png(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 2_000_000
    got = measured_open(str(bomb))
    assert got["error"] == (f"{bomb}: 20000x20000 = 400000000 pixels, over the limit of 100000000; give a smaller "
                            "image, or raise --max-image-pixels if this machine has the memory (3 bytes a pixel)")
    assert got["s"] < 1.0 and got["rss_growth_mb"] < 500, got


def test_a_folder_skips_a_huge_image_with_its_reason_and_plays_the_others(tmp_path):
    bomb_png(tmp_path / "0-bomb.png")
    cv2.imwrite(str(tmp_path / "1-cat.png"), photo("chelsea"))
    source = open_source(str(tmp_path))
    frames = [source.read(), source.read()]
    assert frames[1] is None and frames[0].image.shape == photo("chelsea").shape
    assert source.skipped == [f"{tmp_path / '0-bomb.png'} (20000x20000 = 400000000 pixels, over the limit of "
                              "100000000)"]
    source.rewind()  # --loop: skipped again, listed once
    assert source.read() is not None and source.skipped == [source.skipped[0]]


def test_a_folder_of_nothing_but_huge_images_is_refused_naming_the_flag(tmp_path):
    bomb_png(tmp_path / "a.png", 12_000, 9_000)
    bomb_png(tmp_path / "b.png", 12_000, 9_000)
    with pytest.raises(UserError) as caught:
        open_source(str(tmp_path))
    message = str(caught.value)
    assert "\n" not in message and "no usable image" in message and "12000x9000" in message
    assert "and 1 more" in message and "--max-image-pixels" in message
    assert open_source(str(tmp_path), max_image_pixels=108_000_000).info.width == 12_000  # the limit, raised


def test_the_lab_and_calibration_skip_a_huge_image_unread(tmp_path):
    bomb = bomb_png(tmp_path / "bomb.png")
    frames, read, skipped = read_images([str(bomb)])
    assert frames == [] and read == [] and "over the limit of 100000000" in skipped[0]


def test_max_image_pixels_reaches_the_source_from_the_command_line(tmp_path):
    image = tmp_path / "small.png"
    cv2.imwrite(str(image), np.zeros((40, 50, 3), np.uint8))
    result = run_cli("--source", str(image), "--max-image-pixels", "1000", "--no-dashboard", timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: {image}: 50x40 = 2000 pixels, over the limit of 1000; give a smaller image, or raise "
        "--max-image-pixels if this machine has the memory (3 bytes a pixel)"]
