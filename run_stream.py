#!/usr/bin/env python3
"""Real-time video stream classifier. `python run_stream.py --help` for the options."""

import time

PROCESS_START = time.perf_counter()  # before the heavy imports, so first-frame time includes them

import sys  # noqa: E402

from stream.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(process_start=PROCESS_START))
