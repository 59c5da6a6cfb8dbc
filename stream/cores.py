"""The CPU cores this process may run on: the default thread count of the CPU backends, the run's plan and the
codecs (shared by every layer, so it sits at the bottom)."""

from __future__ import annotations

import os


def available_cores() -> int:
    # The affinity mask, not the machine's count: a container or `taskset` may give the process fewer cores.
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


SMALL_BOX_CORES = 4


def codec_threads() -> int:
    """Threads for FFmpeg's decoders and x264's encoder: one on a box of at most SMALL_BOX_CORES cores, else 0 (the
    codec's own choice). Frame threads buy a single stream's wall time with CPU, and on a small box the model
    needs that CPU: measured on 2 cores, a 720p H.264 decode costs 1.85 ms of CPU per frame on FFmpeg's 2 threads
    against 1.46 on one (still 680 frames a second), libx264 ultrafast 7-8 ms against 6.7."""
    return 1 if available_cores() <= SMALL_BOX_CORES else 0
