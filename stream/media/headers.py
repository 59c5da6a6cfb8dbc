"""An image's width and height from its file header, without decoding a pixel.

What a source refuses must be refused before the decoder allocates: a 1 MB PNG can declare 20000x20000
pixels (1.2 GB decoded). Pillow's lazy `Image.open` is not enough here: its WebP opener allocates the
canvas, relying on Pillow's own decompression-bomb limit, which would then override --max-image-pixels.
The formats are the ones a source plays (stream.media.sources.IMAGE_EXTENSIONS), recognised by their
bytes, not their names, as OpenCV's decoder does.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

FORMATS = "PNG, JPEG, BMP, TIFF or WebP"
MAX_JPEG_SEGMENTS = 1000  # markers before the frame header; real files have tens
# Start-of-frame markers; C4 (DHT), C8 (JPG extension) and CC (DAC) share the range but are not frames.
JPEG_FRAMES = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
JPEG_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # markers without a length


def image_size(path: str | Path) -> tuple[int, int] | None:
    """(width, height) as the file's header declares them; None when it is none of FORMATS or its header is
    cut short or malformed. Reads a few hundred bytes (a JPEG's segment headers up to its frame header)."""
    try:
        with open(path, "rb") as f:
            head = f.read(32)
            reader = _reader(head)
            size = reader(f, head) if reader else None
    except (OSError, struct.error, ValueError, IndexError):
        return None
    return size if size and size[0] > 0 and size[1] > 0 else None


def _reader(head: bytes):
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return _png
    if head.startswith(b"\xff\xd8"):
        return _jpeg
    if head.startswith(b"BM"):
        return _bmp
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return _tiff
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _webp
    return None


def _png(f: BinaryIO, head: bytes) -> tuple[int, int] | None:
    if head[12:16] != b"IHDR":  # the first chunk, by the format's rule
        return None
    return struct.unpack(">II", head[16:24])


def _jpeg(f: BinaryIO, head: bytes) -> tuple[int, int] | None:
    f.seek(2)
    for _ in range(MAX_JPEG_SEGMENTS):
        byte = f.read(1)
        while byte == b"\xff":  # fill bytes may precede a marker
            marker = f.read(1)
            if marker != b"\xff":
                break
            byte = marker
        else:
            return None  # not at a marker: the segment lengths do not add up
        code = marker[0]
        if code in JPEG_STANDALONE:
            continue
        if code in (0xD9, 0xDA):  # end of image, or scan data, before any frame header
            return None
        (length,) = struct.unpack(">H", f.read(2))
        if code in JPEG_FRAMES:
            _, height, width = struct.unpack(">BHH", f.read(5))
            return width, height  # a height of 0 (set later by a DNL marker) is refused by the caller
        f.seek(length - 2, 1)
    return None


def _bmp(f: BinaryIO, head: bytes) -> tuple[int, int] | None:
    (header,) = struct.unpack("<I", head[14:18])
    if header == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        return struct.unpack("<HH", head[18:22])
    width, height = struct.unpack("<ii", head[18:26])
    return width, abs(height)  # a negative height is a top-down bitmap


def _tiff(f: BinaryIO, head: bytes) -> tuple[int, int] | None:
    """The first image's (the one OpenCV reads) ImageWidth and ImageLength tags, classic or BigTIFF."""
    order = "<" if head[:2] == b"II" else ">"
    big = head[2:4] in (b"+\x00", b"\x00+")
    offset = struct.unpack(order + "Q", head[8:16])[0] if big else struct.unpack(order + "I", head[4:8])[0]
    count_fmt, entry_size = ("Q", 20) if big else ("H", 12)
    f.seek(offset)
    (count,) = struct.unpack(order + count_fmt, f.read(struct.calcsize(count_fmt)))
    sizes: dict[int, int] = {}
    for _ in range(min(count, 4096)):
        entry = f.read(entry_size)
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag in (256, 257):  # ImageWidth, ImageLength: SHORT, LONG or LONG8, stored in the entry itself
            value = entry[12:] if big else entry[8:]
            fmt = {3: "H", 4: "I", 16: "Q"}.get(kind)
            if fmt is None:
                return None
            sizes[tag] = struct.unpack(order + fmt, value[:struct.calcsize(fmt)])[0]
        if len(sizes) == 2:
            return sizes[256], sizes[257]
    return None


def _webp(f: BinaryIO, head: bytes) -> tuple[int, int] | None:
    chunk, data = head[12:16], head[20:32]
    if chunk == b"VP8X":  # extended: the canvas, 24-bit sizes minus one
        return int.from_bytes(data[4:7], "little") + 1, int.from_bytes(data[7:10], "little") + 1
    if chunk == b"VP8L" and data[0] == 0x2F:  # lossless: 14-bit sizes minus one, after the signature byte
        bits = int.from_bytes(data[1:5], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and data[3:6] == b"\x9d\x01\x2a":  # lossy: after the frame tag and start code
        width, height = struct.unpack("<HH", data[6:10])
        return width & 0x3FFF, height & 0x3FFF
    return None
