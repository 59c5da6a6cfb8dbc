"""Ctrl-C and SIGTERM for the command line.

Before a run is under way they raise (KeyboardInterrupt, or Terminated for SIGTERM), so loading a
model stops at once. While a pipeline runs they only ask it to stop: the render loop looks between
two frames, so a frame is never half written to its sinks (in the video but not in the log).
"""

from __future__ import annotations

import signal
from contextlib import contextmanager

from stream.errors import Terminated

END_SIGTERM, END_SIGINT = "SIGTERM", "Ctrl-C (SIGINT)"
EXIT_SIGINT, EXIT_SIGTERM = 130, 143


class Interrupts:
    def __init__(self) -> None:
        self.requested: str | None = None
        self._deferred = False

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(sig) is not signal.SIG_IGN:  # a run started to ignore Ctrl-C (nohup) still does
                signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        if self._deferred:
            self.requested = END_SIGTERM if signum == signal.SIGTERM else END_SIGINT
            return
        raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt

    def pending(self) -> str | None:
        return self.requested

    @contextmanager
    def deferred(self):
        """Signals become a request, answered by the caller at a safe point."""
        self._deferred = True
        try:
            yield self
        finally:
            self._deferred = False
