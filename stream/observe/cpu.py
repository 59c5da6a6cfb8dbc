"""Where the process's CPU goes: per stage, per frame, and how long each stage thread waits on its neighbours.

Each pipeline thread owns a `ThreadCpu` and splits its own CPU clock (time.thread_time, about 1 µs a call)
into named parts as it goes: `lap(part)` charges everything since the previous lap to `part`, so a thread's
parts always add up to its whole CPU time, and the thread is the only writer (no lock per frame). Waiting on
a neighbour (a queue's get or put, the mux) is wall time it spends blocked, kept as `idle_s`.

Threads the pipeline does not run (a runtime's intra-op pool, FFmpeg's and x264's helpers, the web server)
are read from /proc/self/task/<tid>/schedstat (nanoseconds of CPU): those born while the backend loaded are
`claim`ed as the model's, Python threads are named by their role (`web`), the rest are `other_threads`.
The process's own CPU clock less every part is `unattributed` (threads that ended, the clocks' skew).

`CpuMeter.start()` marks the baseline (the run's start, after warm-up), `stop()` freezes the figures at the
run's end; `snapshot(frames)` divides by the frames the run rendered.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

# In the order a frame meets them; the pipeline's own overhead is OVERHEAD.
STAGES = ("decode", "capture", "batching", "preprocess", "inference", "inference_pool", "postprocess", "decisions",
          "render", "encode", "sinks", "session", "web", "event_outputs", "other_threads", "unattributed")
OVERHEAD = ("capture", "batching", "session", "unattributed")
LABELS = {
    "decode": "decode (source read)",
    "capture": "capture thread, rest",
    "batching": "batch thread, rest",
    "preprocess": "preprocess",
    "inference": "inference (batch thread)",
    "inference_pool": "inference (runtime threads)",
    "postprocess": "postprocess",
    "decisions": "decisions (steady labels, events, clips)",
    "render": "render (draw)",
    "encode": "encode (video file)",
    "sinks": "other sinks",
    "session": "render loop, rest",
    "web": "web server",
    "event_outputs": "event outputs (clips, MQTT, webhooks)",
    "other_threads": "other native threads",
    "unattributed": "unattributed",
}
WEB_THREADS = ("web", "preview-jpeg")  # stream.web.server's thread and JPEG pool, by their names
EVENT_THREADS = ("clips", "webhook", "paho-mqtt", "mqtt")  # stream.outputs' clip worker, webhooks, paho's loop
ENCODE_THREADS = ("encode-",)  # stream.outputs.sinks.VideoFileSink's encoder thread
MODEL_THREADS = ("model-",)  # a backend's own Python thread for its model calls (torch_backend.DeviceThread)
# Ended pipeline threads kept by name in the threads table; older ones (a service's departed cameras) are folded into
# their stages' totals, as every ended native thread is: what a snapshot walks stays flat over months of churn.
ENDED_KEPT = 32


class ThreadCpu:
    """One thread's CPU clock split into parts by the thread itself."""

    __slots__ = ("role", "name", "parts", "idle_s", "bound_at", "ended_at", "native_id", "_ident", "_mark")

    def __init__(self, role: str, name: str | None = None) -> None:
        self.role, self.name = role, name or role
        self.parts: dict[str, float] = {}
        self.idle_s = 0.0
        self.bound_at: float | None = None
        self.ended_at: float | None = None
        self.native_id: int | None = None
        self._ident: int | None = None
        self._mark = 0.0

    def bind(self) -> None:
        """In the thread itself: its clock from now on (CPU before this is not the run's)."""
        self._ident, self.native_id = threading.get_ident(), threading.get_native_id()
        self._mark = time.thread_time()
        self.bound_at, self.ended_at = time.perf_counter(), None

    def lap(self, part: str) -> None:
        """Charge the thread's CPU since the last lap to `part`; a call from another thread is ignored."""
        if threading.get_ident() != self._ident:
            return
        now = time.thread_time()
        self.parts[part] = self.parts.get(part, 0.0) + (now - self._mark)
        self._mark = now

    def waited(self, since: float) -> None:
        """Wall time blocked on a neighbour since `since` (a perf_counter reading)."""
        self.idle_s += time.perf_counter() - since

    def end(self, part: str) -> None:
        """The thread's last lap: its figures stay when it is gone."""
        self.lap(part)
        if threading.get_ident() == self._ident:
            self.ended_at = time.perf_counter()

    def cpu_s(self) -> float:
        return sum(dict(self.parts).values())


@dataclass(frozen=True)
class ThreadFigures:
    name: str
    role: str
    cpu_s: float
    idle_s: float
    wall_s: float

    @property
    def idle_share(self) -> float:
        return self.idle_s / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def busy_share(self) -> float:
        return self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0


@dataclass(frozen=True)
class CpuSnapshot:
    wall_s: float
    process_s: float  # the process's CPU since the start, every thread's
    frames: int
    stages: dict[str, float]  # seconds of CPU by stage, STAGES' order; they add up to process_s
    threads: list[ThreadFigures]

    def per_frame_ms(self, stage: str | None = None) -> float:
        seconds = self.process_s if stage is None else self.stages.get(stage, 0.0)
        return seconds * 1000 / self.frames if self.frames else float("nan")

    def share(self, stage: str) -> float:
        return self.stages.get(stage, 0.0) / self.process_s if self.process_s > 0 else float("nan")

    @property
    def overhead_share(self) -> float:
        return sum(self.share(s) for s in OVERHEAD)

    def as_dict(self) -> dict:
        return {
            "frames": self.frames, "wall_s": self.wall_s, "process_s": self.process_s,
            "process_ms_per_frame": self.per_frame_ms(),
            "cores_busy": self.process_s / self.wall_s if self.wall_s > 0 else None,
            "stages": {s: {"ms_per_frame": self.per_frame_ms(s), "share": self.share(s), "seconds": v}
                       for s, v in self.stages.items()},
            "overhead": {"stages": list(OVERHEAD), "share": self.overhead_share,
                         "ms_per_frame": sum(self.per_frame_ms(s) for s in OVERHEAD)},
            "unattributed_ms_per_frame": self.per_frame_ms("unattributed"),
            "threads": [{"name": t.name, "role": t.role, "cpu_s": t.cpu_s, "idle_s": t.idle_s, "wall_s": t.wall_s,
                         "busy_share": t.busy_share, "idle_share": t.idle_share} for t in self.threads],
        }


def task_cpu_s() -> dict[int, float]:
    """CPU seconds of every thread of this process, by native thread id (Linux; {} elsewhere)."""
    out: dict[int, float] = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/schedstat", "rb") as f:
                out[int(tid)] = int(f.read().split()[0]) / 1e9
        except (OSError, ValueError, IndexError):  # it ended meanwhile
            continue
    return out


def native_threads() -> set[int]:
    """Native ids of this process's threads that Python does not run (a runtime's pool, codec helpers)."""
    python = {t.native_id for t in threading.enumerate()}
    return set(task_cpu_s()) - python


# Native threads are the process's, whoever made them: which stage's library started each one, by native id.
_BORN: dict[int, str] = {}
_BORN_LOCK = threading.Lock()


@contextmanager
def born_as(stage: str) -> Iterator[None]:
    """Native threads started inside this block work for `stage` (a runtime's pool at its load, a decoder's
    helpers when its source opens, an encoder's at its first frame)."""
    before = native_threads()
    try:
        yield
    finally:
        born = native_threads() - before
        with _BORN_LOCK:
            _BORN.update(dict.fromkeys(born, stage))


def born_stages() -> dict[int, str]:
    with _BORN_LOCK:
        return dict(_BORN)


class CpuMeter:
    """The run's CPU by stage. `track` the pipeline's threads, `claim` native threads for a stage."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # tracking and snapshots only, never per frame
        self._threads: list[ThreadCpu] = []
        self._claimed: dict[int, str] = {}
        self._base_tasks: dict[int, float] = {}
        self._base_process = 0.0
        self._seen: dict[int, float] = {}  # each thread's CPU when last read: an ended thread keeps its share
        self._roles: dict[int, str] = {}  # each Python thread's stage by its name, when last read: likewise
        self._started_at: float | None = None
        self._frozen: tuple[float, float, dict[int, float]] | None = None
        self._folded: dict[str, float] = {}  # by stage: threads that ended and were let go

    def track(self, clock: ThreadCpu) -> ThreadCpu:
        with self._lock:
            self._threads.append(clock)
        return clock

    def claim(self, tids, stage: str) -> None:
        with self._lock:
            self._claimed.update(dict.fromkeys(tids, stage))

    @property
    def started(self) -> bool:
        return self._started_at is not None

    def start(self) -> None:
        self._base_tasks = task_cpu_s()
        self._seen = dict(self._base_tasks)
        self._base_process = time.process_time()
        self._started_at, self._frozen, self._folded = time.perf_counter(), None, {}

    def sample(self) -> dict[int, float]:
        """Read every thread's CPU now; threads that ended since keep what they were last seen using. Call it before
        closing what owns native threads (sources, encoders), so their last figures are kept."""
        with self._lock:
            return self._read()[0]

    def _read(self) -> tuple[dict[int, float], list[ThreadCpu], dict[str, float]]:
        """Under the lock, in one go: threads' CPU now, the tracked threads and the folded totals (a fold between
        reading one and another would count a thread twice)."""
        tasks = task_cpu_s()
        self._seen.update(tasks)
        self._roles.update({t.native_id: _role(t.name) for t in threading.enumerate()})
        if self._started_at is not None and self._frozen is None:  # a stopped meter's figures stay as they were
            self._fold(set(tasks))
        return dict(self._seen), list(self._threads), dict(self._folded)

    def _fold(self, alive: set[int]) -> None:
        """Threads gone from the process: untracked ones' CPU into their stage's total at once, tracked ones beyond
        the newest ENDED_KEPT likewise (their laps). A thread id the kernel hands out again is then a new thread."""
        tracked = {c.native_id for c in self._threads}
        gone = set(self._seen) - alive
        ended = [c for c in self._threads if c.native_id is not None and c.native_id not in alive]
        for clock in ended[:max(len(ended) - ENDED_KEPT, 0)]:
            for part, seconds in dict(clock.parts).items():
                self._folded[part] = self._folded.get(part, 0.0) + seconds
            self._threads.remove(clock)
            self._forget(clock.native_id)
        claimed = {**born_stages(), **self._claimed}
        for tid in gone - tracked:
            stage = claimed.get(tid) or self._roles.get(tid) or "other_threads"
            used = max(self._seen[tid] - self._base_tasks.get(tid, 0.0), 0.0)
            self._folded[stage] = self._folded.get(stage, 0.0) + used
            self._forget(tid)

    def _forget(self, tid: int | None) -> None:
        for table in (self._seen, self._base_tasks, self._roles, self._claimed):
            table.pop(tid, None)
        with _BORN_LOCK:
            _BORN.pop(tid, None)

    def stop(self) -> None:
        """The run is over: later snapshots show it as it was now."""
        if self._started_at is not None and self._frozen is None:
            self._frozen = (time.perf_counter(), time.process_time(), self.sample())

    def snapshot(self, frames: int) -> CpuSnapshot | None:
        if self._started_at is None:
            return None
        with self._lock:
            if self._frozen is not None:
                (now, process, tasks), threads, folded = self._frozen, list(self._threads), dict(self._folded)
            else:
                now, process = time.perf_counter(), time.process_time()
                tasks, threads, folded = self._read()
            claimed = {**born_stages(), **self._claimed}
        stages = dict.fromkeys(STAGES, 0.0)
        for stage, seconds in folded.items():
            stages[stage] = stages.get(stage, 0.0) + seconds
        figures = []
        for t in threads:
            parts = dict(t.parts)
            for part, seconds in parts.items():
                stages[part] = stages.get(part, 0.0) + seconds
            if t.bound_at is not None:
                end = min(t.ended_at or now, now)
                figures.append(ThreadFigures(t.name, t.role, sum(parts.values()), t.idle_s,
                                             max(end - max(t.bound_at, self._started_at), 0.0)))
        with self._lock:
            roles = {**self._roles, **{t.native_id: _role(t.name) for t in threading.enumerate()}}
        tracked = {c.native_id for c in threads}  # their own laps count them, alive or ended
        for tid, seconds in tasks.items():
            if tid in tracked:
                continue
            used = max(seconds - self._base_tasks.get(tid, 0.0), 0.0)
            stage = claimed.get(tid) or roles.get(tid) or "other_threads"
            stages[stage] = stages.get(stage, 0.0) + used
        process_s = process - self._base_process
        stages["unattributed"] = process_s - sum(v for k, v in stages.items() if k != "unattributed")
        return CpuSnapshot(now - self._started_at, process_s, frames, stages, figures)


def _role(name: str) -> str:
    if name.startswith(EVENT_THREADS):  # first: the webhook worker's name starts as the web server's does
        return "event_outputs"
    if name.startswith(WEB_THREADS):
        return "web"
    if name.startswith(ENCODE_THREADS):
        return "encode"
    return "inference_pool" if name.startswith(MODEL_THREADS) else "other_threads"


__all__ = ["CpuMeter", "CpuSnapshot", "LABELS", "OVERHEAD", "STAGES", "ThreadCpu", "born_as", "native_threads",
           "task_cpu_s"]
