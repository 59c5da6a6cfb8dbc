"""Capture stage: source → bounded queue, in its own thread."""

from __future__ import annotations

import threading
import time

from stream.errors import StreamError
from stream.queues import FrameQueue
from stream.sources import Source
from stream.stats import StatsCollector
from stream.worker import Worker


class CaptureThread(Worker):
    def __init__(self, source: Source, out: FrameQueue, stats: StatsCollector, stop: threading.Event,
                 max_frames: int | None = None, loop: bool = False, pace_fps: float | None = None) -> None:
        super().__init__("capture", stop)
        self.source = source
        self.out = out
        self.stats = stats
        self.max_frames = max_frames
        self.loop = loop
        # Pacing reads a file at its own frame rate, as a camera would deliver it.
        self.pace_fps = pace_fps
        self.frames_read = 0
        self.end_reason = "end of input"
        # A lost live stream ends the run gracefully (queued frames are still processed), then
        # the main thread reports it as an error.
        self.stream_error: StreamError | None = None
        self.stale_discarded = 0

    def work(self) -> None:
        read_this_pass = 0
        # Frames a live source buffered during start-up are seconds old: never show them as live.
        self.stale_discarded = self.source.discard_backlog()
        started = time.perf_counter()
        while not self.stop.is_set():
            if self.pace_fps:
                delay = started + self.frames_read / self.pace_fps - time.perf_counter()
                if delay > 0 and self.stop.wait(delay):
                    break
            if self.max_frames is not None and self.frames_read >= self.max_frames:
                self.end_reason = f"--max-frames {self.max_frames} reached"
                break
            try:
                frame = self.source.read()
            except StreamError as exc:
                self.stream_error = exc
                self.end_reason = str(exc)
                break
            if frame is None:
                # An empty pass would make --loop spin forever on a file that no longer decodes.
                if self.loop and read_this_pass > 0 and self.source.rewind():
                    read_this_pass = 0
                    continue
                break
            self.stats.captured(frame.captured_at)
            self.out.put(frame)
            self.frames_read += 1
            read_this_pass += 1
        self.out.close(self.end_reason)
