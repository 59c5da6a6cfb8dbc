#!/usr/bin/env python3
"""Real-time video stream classifier. `python run_stream.py --help` for the options."""

import time

PROCESS_START = time.perf_counter()  # before the heavy imports, so first-frame time includes them

import faulthandler  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

from stream.cli import main  # noqa: E402

if __name__ == "__main__":
    # `kill -USR1 <pid>` prints every thread's stack to stderr: how to see where a stuck run waits.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    sys.exit(main(process_start=PROCESS_START))
