"""`--events FILE.jsonl` and `--segments FILE.jsonl`: the durable records, one JSON line each, on disk per line.

The events file is the record every other output is checked against: it is written on the render thread,
line-buffered, so an abrupt stop loses at most the line being written, and nothing queues in front of it.
"""

from __future__ import annotations

import json
import threading

from stream.decisions.records import Delivery, Event, Segment
from stream.frames import Steady
from stream.outputs.staged import Staged


class JsonLines:
    def __init__(self, path: str) -> None:
        self.path = path
        self.written = 0
        self.failed = 0
        self._lock = threading.Lock()
        self._staged = Staged(path)
        self._file = open(self._staged.write_path, "w", buffering=1, encoding="utf-8")

    def line(self, record: dict) -> None:
        with self._lock:
            if self._file.closed:
                self.failed += 1
                return
            self._file.write(json.dumps(record) + "\n")
            self.written += 1

    def close(self) -> None:
        with self._lock:
            if self._file.closed:
                return
            try:
                self._file.close()
            finally:
                self._staged.commit()


class EventLog(JsonLines):
    """An EventOutput (stream.decisions.records) that never drops: a write either lands or raises."""

    @property
    def name(self) -> str:
        return f"events:{self.path}"

    def publish(self, event: Event) -> None:
        self.line(event.record())

    def steady(self, stream: str, steady: Steady) -> None:
        pass

    def stream_gone(self, stream: str) -> None:
        pass

    def delivery(self) -> Delivery:
        return Delivery(self.name, self.written, self.failed)


class SegmentLog(JsonLines):
    def segment(self, segment: Segment) -> None:
        self.line(segment.record())
