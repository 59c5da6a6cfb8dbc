"""Threads that carry their exception back to the main thread instead of dying silently."""

from __future__ import annotations

import threading

from stream.observe.cpu import ThreadCpu
from stream.pipeline.queues import Stopped


class Worker(threading.Thread):
    """Runs `work()`; any exception is kept in `.error` and sets the shared stop Event."""

    role = "other_threads"  # its CPU outside the parts it names itself (stream.observe.cpu)

    def __init__(self, name: str, stop: threading.Event) -> None:
        # Daemon: a thread stuck in a native call must not keep the process alive after the join timeout.
        super().__init__(name=name, daemon=True)
        self.stop = stop
        self.error: BaseException | None = None
        self.cpu = ThreadCpu(self.role, name)

    def work(self) -> None:
        raise NotImplementedError

    def run(self) -> None:
        self.cpu.bind()
        try:
            self.work()
        except Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001 - carried to the main thread, re-raised there
            self.error = exc
            self.stop.set()
        finally:
            self.cpu.end(self.role)
