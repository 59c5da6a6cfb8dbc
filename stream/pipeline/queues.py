"""The bounded queue between capture and inference, with its two overflow policies.

- block:  the producer waits for room; nothing is lost (files, image folders).
- latest: the oldest queued frame is dropped to make room (live sources): latency stays bounded
          and every dropped frame is counted.
"""

from __future__ import annotations

import queue
import threading
from typing import Generic, TypeVar

from stream.pipeline.frames import EndOfStream

T = TypeVar("T")
POLICIES = ("block", "latest")
POLL_S = 0.05


class Stopped(Exception):
    """The shared stop Event was set while waiting on a queue."""


class FrameQueue(Generic[T]):
    def __init__(self, maxsize: int, policy: str, stop: threading.Event) -> None:
        if maxsize < 1:
            raise ValueError("queue size must be at least 1")
        if policy not in POLICIES:
            raise ValueError(f"unknown drop policy {policy!r}; use one of {POLICIES}")
        self._q: queue.Queue[T | EndOfStream] = queue.Queue(maxsize)
        self._policy = policy
        self._stop = stop
        self._lock = threading.Lock()
        self.dropped = 0

    def qsize(self) -> int:
        return self._q.qsize()

    def put(self, item: T) -> None:
        if self._policy == "latest":
            self._put_latest(item)
        else:
            self._put_blocking(item)

    def _put_latest(self, item: T) -> None:
        # The lock makes drop-then-put atomic against other producers; the consumer only takes.
        with self._lock:
            while True:
                try:
                    self._q.put_nowait(item)
                    return
                except queue.Full:
                    try:
                        self._q.get_nowait()
                        self.dropped += 1
                    except queue.Empty:
                        pass

    def _put_blocking(self, item: T | EndOfStream) -> None:
        while True:
            if self._stop.is_set():
                raise Stopped
            try:
                self._q.put(item, timeout=POLL_S)
                return
            except queue.Full:
                continue

    def close(self, reason: str = "end of input") -> None:
        """Put the end-of-stream marker. Nothing is put after it, so it is never dropped; under the
        latest policy it displaces the oldest frame rather than wait for a consumer."""
        marker = EndOfStream(reason)
        if self._policy == "latest":
            self._put_latest(marker)
        else:
            self._put_blocking(marker)

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
