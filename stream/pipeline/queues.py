"""The bounded, lossless hand-off queue between threaded stages: inference → the render loop, and the Ray
engine's requests in flight. Capture hands frames to the mux (stream.pipeline.mux), which has the live and
file buffer policies; this queue only ever waits for room, watching the run's stop Event.
"""

from __future__ import annotations

import queue
import threading
from typing import Generic, TypeVar

from stream.frames import EndOfStream

T = TypeVar("T")
POLL_S = 0.05


class Stopped(Exception):
    """The shared stop Event was set while waiting on a queue."""


class FrameQueue(Generic[T]):
    def __init__(self, maxsize: int, stop: threading.Event) -> None:
        if maxsize < 1:
            raise ValueError("queue size must be at least 1")
        self._q: queue.Queue[T | EndOfStream] = queue.Queue(maxsize)
        self._stop = stop

    def qsize(self) -> int:
        return self._q.qsize()

    def put(self, item: T | EndOfStream) -> None:
        while True:
            if self._stop.is_set():
                raise Stopped
            try:
                self._q.put(item, timeout=POLL_S)
                return
            except queue.Full:
                continue

    def close(self, reason: str = "end of input") -> None:
        """Put the end-of-stream marker; nothing is put after it."""
        self.put(EndOfStream(reason))

    def get(self, timeout: float | None = None) -> T | EndOfStream:
        """Next item, waiting up to `timeout` (forever if None) while the stop Event is clear.

        Raises queue.Empty on timeout and Stopped when the stop Event is set.
        """
        waited = 0.0
        while True:
            if self._stop.is_set():
                raise Stopped
            step = POLL_S if timeout is None else min(POLL_S, max(timeout - waited, 0.0))
            try:
                return self._q.get(timeout=step) if step > 0 else self._q.get_nowait()
            except queue.Empty:
                waited += step
                if timeout is not None and waited >= timeout:
                    raise

    def drain(self) -> list[T]:
        """Whatever is still queued, without waiting (used after a stop to keep processed work)."""
        items = []
        while True:
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                return items
            if not isinstance(item, EndOfStream):
                items.append(item)
