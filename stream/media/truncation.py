"""Whether a video file that decoded fewer frames than its container announced is really damaged.

A container's frame count is not evidence on its own: an mp4 whose edit list hides a frame says 456
and decodes 455, and a variable-frame-rate file's count may be its duration times a nominal rate.
A file is called truncated only when both kinds of evidence agree that decoding stopped well before
the end: more frames missing than a tolerance, and (where the decoder gives timestamps) the last
decoded timestamp short of the container's duration by more than that tolerance too. OpenCV does
not report decode errors, so an error that ends decoding early shows as exactly such a gap.
"""

from __future__ import annotations

from dataclasses import dataclass

MIN_FRAMES = 2  # "more than 2 frame periods"
MIN_SHARE = 0.005  # "and more than 0.5 % of the frames"


@dataclass(frozen=True)
class DecodeCheck:
    truncated: bool
    message: str | None  # the fault when truncated; otherwise a note worth a warning, or None


def tolerance(expected: int) -> float:
    return max(MIN_FRAMES, MIN_SHARE * expected)


def check_decoded(uri: str, expected: int | None, fps: float | None, frames_read: int,
                  last_pts_s: float | None) -> DecodeCheck:
    """`expected` frames announced at `fps`; `frames_read` decoded, the latest at `last_pts_s` (None: unknown)."""
    if not expected or frames_read >= expected:
        return DecodeCheck(False, None)
    missing = expected - frames_read
    allowed = tolerance(expected)
    if missing <= allowed:
        return DecodeCheck(False, None)  # an off-by-one container count, or a frame hidden by an edit list
    if fps and last_pts_s is not None:
        periods_short = expected - (last_pts_s * fps + 1)
        if periods_short <= allowed:
            return DecodeCheck(False, (
                f"{uri}: decoded {frames_read} of the {expected} frames its container announces, but the last "
                f"frame's timestamp reaches the container's end: a nominal count (variable frame rate) or frames "
                "lost mid-file; every decoded frame was processed"))
    return DecodeCheck(True, (
        f"{uri}: only {frames_read} of {expected} frames could be decoded and decoding stopped "
        f"{_short(expected, frames_read, fps, last_pts_s)} before the end (truncated or corrupt file); the decoded "
        "frames were processed and written, re-encode or re-copy the file"))


def _short(expected: int, frames_read: int, fps: float | None, last_pts_s: float | None) -> str:
    if fps and last_pts_s is not None:
        return f"{max(expected / fps - last_pts_s - 1 / fps, 0.0):.1f} s"
    return f"{expected - frames_read} frames"
