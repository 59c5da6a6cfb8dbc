"""Real frames for `bench`: the sample clip by default; reading them is stream.media.stills'."""

from __future__ import annotations

from stream.media.stills import load_frames, read_images

__all__ = ["default_inputs", "load_frames", "read_images"]


def default_inputs(cache_dir: str | None = None) -> str:
    from stream.media.sample import sample_clip

    return str(sample_clip(cache_dir))
