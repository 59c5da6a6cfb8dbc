"""Capture stage: one thread per stream, source → the stream's buffer in the mux.

A live stream has a life of its own: connecting → running → (lost or stalled) → reconnecting →
running … → ended or failed; a running one whose picture is frozen or blank says so instead
(stream.pipeline.health). Reconnects back off exponentially with jitter (1 s doubling to 30 s) and
the backoff resets after a healthy minute. A stream is *stalled* when no frame came from its source
for max(5 s, 10 frame periods) while nothing downstream held it back; a read that blocks that long
returns (stream URLs are opened with that read timeout) and the stream is reconnected. Frames get
the stream's own running index, so a reconnect never repeats or reuses one; nothing is invented
while a stream is down.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from stream.errors import StreamError, UserError
from stream.media.sources import Source
from stream.observe.stats import StatsCollector
from stream.pipeline.health import FROZEN, HealthRules, HealthSummary, HealthWatch
from stream.pipeline.mux import StreamMux
from stream.pipeline.worker import Worker

CONNECTING, RUNNING, RECONNECTING, STALLED, ENDED, FAILED = (
    "connecting", "running", "reconnecting", "stalled", "ended", "failed")
HEALTHY_S = 60.0
READ_TIMEOUT_S = 5.0  # a stream URL's read gives up after this (stream.session.orchestrator opens them so)


@dataclass(frozen=True)
class Reconnect:
    enabled: bool = False
    max_attempts: int | None = None  # consecutive failed attempts before the stream fails; None: no limit
    first_s: float = 1.0
    cap_s: float = 30.0
    jitter: float = 0.25  # ± this share of each delay, so cameras that dropped together do not return in step

    def delay(self, attempt: int, rng: random.Random) -> float:
        base = min(self.first_s * 2.0 ** min(attempt - 1, 30), self.cap_s)  # capped exponent: days of retries
        return base * (1 + rng.uniform(-self.jitter, self.jitter))


def stall_limit_s(fps: float | None) -> float:
    return max(5.0, 10.0 / (fps or 30.0))


class CaptureThread(Worker):
    role = "capture"

    def __init__(self, stream: int, source: Source, reopen: Callable[[], Source], mux: StreamMux,
                 stats: list[StatsCollector], stop: threading.Event, max_frames: int | None = None, loop: bool = False,
                 pace_fps: float | None = None, reconnect: Reconnect = Reconnect(), seed: int | None = None,
                 name: str | None = None, health: HealthRules | None = None) -> None:
        super().__init__(f"capture-{name or stream}", stop)
        # Set to end this stream alone (it was removed from the run); the run's stop ends every stream.
        self.halt = threading.Event()
        self.stream, self.source, self.reopen, self.mux, self.stats = stream, source, reopen, mux, stats
        self.max_frames, self.loop, self.pace_fps, self.policy = max_frames, loop, pace_fps, reconnect
        self.frames_read = 0
        self.end_reason = "end of input"
        # A lost live stream ends this stream gracefully (queued frames are still processed); the
        # caller reports it as an error when it was not reconnected.
        self.stream_error: StreamError | None = None
        self.stale_discarded = 0  # buffered during start-up, skipped unshown
        self.backlog_skipped = 0  # buffered by a reconnected source before its first fresh frame
        self.state = CONNECTING
        self.reconnects = 0  # successful reconnections
        self.stalls = 0
        self.last_frame_at: float | None = None
        self._waiting_since: float | None = None  # when the wait for the next frame began, if before its read
        self._rng = random.Random(seed)
        # Only a live source can be frozen or blank: a file of a still scene is what it is.
        self.watch = HealthWatch(health) if health is not None and health.enabled and source.info.live else None
        self.frozen_reconnects = 0

    def status(self, now: float | None = None) -> str:
        """The state as a person should see it: a running stream with no frame for too long is stalled."""
        now = time.perf_counter() if now is None else now
        if (self.state == RUNNING and self.last_frame_at is not None and not self.mux.waiting_for_room(self.stream)
                and now - self.last_frame_at > stall_limit_s(self.source.info.fps)):
            return STALLED
        if self.state == RUNNING and self.watch is not None and self.watch.state is not None:
            return self.watch.state  # alive, but frozen or blank
        return self.state

    def health(self) -> HealthSummary | None:
        return None if self.watch is None else self.watch.summary(time.perf_counter())

    def _halted(self) -> bool:
        return self.stop.is_set() or self.halt.is_set()

    def _wait(self, seconds: float) -> bool:
        """Sleep, woken early by either the run's stop or this stream's halt; whether it was."""
        deadline = time.perf_counter() + seconds
        while not self._halted():
            left = deadline - time.perf_counter()
            if left <= 0:
                return False
            self.halt.wait(min(left, 0.1))
        return True

    def work(self) -> None:
        try:
            self._run()
        finally:
            if self.state in (RUNNING, CONNECTING, RECONNECTING):  # stopped from outside, e.g. mid-put
                self.state = ENDED
                if self._halted() and self.end_reason == "end of input":
                    self.end_reason = "removed" if self.halt.is_set() and not self.stop.is_set() else "stopped"
            self.mux.close(self.stream, self.end_reason)
            if self.watch is not None:  # its summary stays; the window of frame pairs is not needed any more
                self.watch.reset()

    def _run(self) -> None:
        # Frames a live source buffered during start-up are seconds old: never show them as live. Skipping them waits
        # on the source too: a source that goes silent meanwhile has been silent since then, not since the next read.
        self._waiting_since = time.perf_counter()
        self.stale_discarded += self.source.discard_backlog()
        self.state = RUNNING
        started, read_this_pass, healthy_since = time.perf_counter(), 0, time.perf_counter()
        attempts = 0
        while not self._halted():
            if self.pace_fps:
                delay = started + self.frames_read / self.pace_fps - time.perf_counter()
                if delay > 0 and self._wait(delay):
                    break
            if self.max_frames is not None and self.frames_read >= self.max_frames:
                self.end_reason = f"--max-frames {self.max_frames} reached"
                break
            asked = self._waiting_since or time.perf_counter()
            self.cpu.lap("capture")
            try:
                frame = self.source.read()
            except StreamError as exc:
                blocked = time.perf_counter() - asked
                stalled = blocked >= 0.9 * min(stall_limit_s(self.source.info.fps), READ_TIMEOUT_S)
                self.stalls += stalled
                if not self.policy.enabled:
                    self.stream_error, self.end_reason, self.state = exc, str(exc), FAILED
                    return
                if time.perf_counter() - healthy_since >= HEALTHY_S:
                    attempts = 0  # it ran well for a minute: back off from the start again
                attempts = self._reconnect(attempts, "stalled" if stalled else "lost")
                if attempts is None:  # stopped while reconnecting
                    return
                if attempts < 0:
                    self.stream_error = StreamError(f"{exc}; {self.end_reason}")
                    return
                healthy_since = time.perf_counter()
                continue
            if frame is None:
                # An empty pass would make --loop spin forever on a file that no longer decodes.
                if self.loop and read_this_pass > 0 and self.source.rewind():
                    read_this_pass = 0
                    continue
                self.state = ENDED
                return
            self.cpu.lap("decode")
            self._waiting_since = None
            self.last_frame_at = frame.captured_at
            health = self.watch.observe(frame.image, frame.captured_at) if self.watch is not None else None
            frame = replace(frame, index=self.frames_read, stream=self.stream, health=health,
                            # A live stream's clock runs on across reconnects (a new source starts at 0).
                            time_s=frame.captured_at - started if self.source.info.live else frame.time_s)
            for stats in self.stats:  # the stream's own figures, and the run's
                stats.captured(frame.captured_at)
            waiting = time.perf_counter()
            self.mux.put(self.stream, frame)
            self.cpu.waited(waiting)
            self.frames_read += 1
            read_this_pass += 1
            if health == FROZEN and self.watch.rules.reconnect_frozen and self.policy.enabled:
                self.frozen_reconnects += 1
                attempts = self._reconnect(attempts, "frozen")
                if attempts is None:
                    return
                if attempts < 0:
                    self.stream_error = StreamError(f"frozen picture; {self.end_reason}")
                    return
                healthy_since = time.perf_counter()
        self.state = ENDED

    def _reconnect(self, attempts: int, why: str) -> int | None:
        """Reopen the source with backoff: the failed attempts so far once it is back (reset only after a
        healthy minute, so a flapping source keeps backing off), -1 when it failed, None when stopped."""
        self.state = RECONNECTING
        self.source.close()
        while not self._halted():
            attempts += 1
            if self.policy.max_attempts is not None and attempts > self.policy.max_attempts:
                self.end_reason = (f"{why} and not back after {self.policy.max_attempts} reconnect attempt(s) "
                                   f"({self.source.info.uri})")
                self.state = FAILED
                return -1
            if self._wait(self.policy.delay(attempts, self._rng)):
                break
            try:
                source = self.reopen()
            except UserError:
                continue
            self.source = source
            if self.watch is not None:
                self.watch.reset()
            self._waiting_since = time.perf_counter()
            self.backlog_skipped += source.discard_backlog()
            self.reconnects += 1
            self.state = RUNNING
            self.last_frame_at = time.perf_counter()
            return attempts
        self.state = ENDED
        self.end_reason = f"stopped while reconnecting ({why})"
        return None
