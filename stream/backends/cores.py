"""The CPU cores this process may run on: the default thread count of the CPU backends and the run's plan."""

from __future__ import annotations

import os


def available_cores() -> int:
    # The affinity mask, not the machine's count: a container or `taskset` may give the process fewer cores.
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
