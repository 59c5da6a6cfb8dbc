"""A one-time build announced with what it is and why, then its elapsed time while it runs."""

from __future__ import annotations

import sys
import threading
import time


class BuildProgress:
    """Context manager: a start line, an elapsed-time line every `every_s`, and a done line."""

    def __init__(self, what: str, every_s: float = 5.0, out=None) -> None:
        self.what, self.every_s = what, every_s
        self.out = out or sys.stdout
        self.phase = ""  # set by the builder (e.g. a TensorRT progress monitor) when it knows
        self.elapsed_s = 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._tick, name="build-progress", daemon=True)

    def __enter__(self) -> BuildProgress:
        self._started = time.perf_counter()
        print(f"{self.what}...", file=self.out, flush=True)
        self._thread.start()
        return self

    def _tick(self) -> None:
        while not self._done.wait(self.every_s):
            phase = f" ({self.phase})" if self.phase else ""
            print(f"  ... {time.perf_counter() - self._started:.0f} s elapsed{phase}", file=self.out, flush=True)

    def __exit__(self, exc_type, exc, tb) -> None:
        self._done.set()
        self._thread.join(timeout=1.0)
        self.elapsed_s = time.perf_counter() - self._started
        if exc_type is None:
            print(f"  done in {self.elapsed_s:.1f} s", file=self.out, flush=True)
