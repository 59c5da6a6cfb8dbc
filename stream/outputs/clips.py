"""`--clips DIR`: a JPEG snapshot of every start event, and for rules with `clip = true` an H.264 mp4 from
`pre_roll_s` before the event to `post_roll_s` after its end, with a JSON sidecar (stream.decisions.records.EventMedia).

The render thread only hands frames over: `frame()` appends the annotated image (the frame's own, drawn in place
and never written again once the sinks have it, so no copy) to a bounded queue and returns. One worker thread
encodes each frame to JPEG into its stream's pre-roll (stream.outputs.preroll), writes the frames of open clips
and the snapshots. If it falls behind, the oldest frame not yet encoded is dropped and counted: the video never
waits. Events of one stream that overlap share one clip, which runs until the latest end plus its post-roll.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from stream.decisions.records import Event
from stream.decisions.rules import RuleSet
from stream.outputs.clip_files import SNAPSHOTS, Names, check_folder, safe, write_file
from stream.outputs.clip_writer import Clip
from stream.outputs.preroll import MARGIN_S, Encoded, PreRoll

__all__ = ["ClipRecorder", "check_folder"]

JPEG_QUALITY = 80  # 720p: about 75 kB and 2.4 ms here; 90 is 110 kB for no visible gain after H.264
HANDOFF_FRAMES = 32  # raw frames waiting for the worker, all streams: 88 MB at 720p, about 1 s of a 30 fps camera
PENDING_SNAPSHOTS = 16  # beyond this, a start event gets no snapshot (counted) rather than queueing more frames
CLOSE_S = 5.0  # close(): the worker's deadline; a clip still being written then ends where it got to
DEFAULT_FPS = 30.0  # a clip whose pre-roll holds fewer than two frames


@dataclass(frozen=True)
class _Frame:
    stream: str
    index: int
    time_s: float
    image: np.ndarray
    clip: Clip | None


@dataclass(frozen=True)
class _Open:
    clip: Clip


@dataclass(frozen=True)
class _Finish:
    clip: Clip


@dataclass(frozen=True)
class _Snapshot:
    stream: str
    path: Path
    index: int | None  # the frame whose JPEG the pre-roll already holds, if it is that one
    image: np.ndarray


@dataclass(frozen=True)
class _Forget:
    stream: str


_STOP = object()


@dataclass
class _Live:
    """The render thread's view of one stream."""

    clip: Clip | None = None
    last_index: int | None = None
    last_image: np.ndarray | None = None


@dataclass
class _Figures:
    peak_buffer_bytes: int = 0
    evicted_by_bytes: int = 0
    keeps_s: float = 0.0


class ClipRecorder:
    def __init__(self, folder: str, rules: RuleSet, buffer_mb: float) -> None:
        check_folder(folder)
        self.folder = Path(folder)
        self.rules, self.buffer_mb = rules, buffer_mb
        self.max_bytes = int(buffer_mb * 1_000_000)
        self.names = Names()
        self._by_name = {r.name: r for r in rules.rules}
        self._live: dict[str, _Live] = {}
        self._cond = threading.Condition()
        self._inbox: deque = deque()
        self._pending_frames = self._pending_snapshots = 0
        self._buffers: dict[str, PreRoll] = {}  # worker only
        self._figures: dict[str, _Figures] = {}
        self._deadline: float | None = None
        self.clips: list[str] = []
        self.snapshots = self.frames_encoded = self.frames_dropped = self.snapshots_dropped = 0
        self.clips_failed = self.clips_truncated = self.errors = self.frames_skipped_at_close = 0
        self.last_error: str | None = None
        self.closed = False
        self._worker = threading.Thread(target=self._run, name="clips", daemon=True)
        self._worker.start()

    # ---- the render thread

    def wants(self, stream: str) -> bool:
        return any(r.clip for r in self.rules.for_stream(stream))

    def frame(self, stream: str, index: int, time_s: float, annotated) -> None:
        s = self._stream(stream)
        s.last_index, s.last_image = index, annotated
        clip = s.clip
        if clip is not None and not clip.running and time_s > clip.until_s:
            self._send(_Finish(clip))
            s.clip = clip = None
        with self._cond:
            if self._pending_frames >= HANDOFF_FRAMES:
                self._drop_oldest()
            else:
                self._pending_frames += 1
            self._inbox.append(_Frame(stream, index, time_s, annotated, clip))
            self._cond.notify()

    def start(self, event: Event, annotated) -> tuple[str | None, str | None]:
        s = self._stream(event.stream)
        snapshot = None if annotated is None else self._snapshot(s, event, annotated)
        rule = self._by_name.get(event.rule)
        if rule is None or not rule.clip:
            return snapshot, None
        clip = s.clip
        if clip is None:
            stamp = safe(event.wall_time.replace("-", "").replace(":", "")) if event.wall_time else f"f{event.frame}"
            path = self.names.reserve(self.folder, f"{safe(event.stream)}-{stamp}-{safe(rule.name)}", ".mp4",
                                      beside=".json")
            clip = s.clip = Clip(event.stream, path, event.time_s - rule.pre_roll_s)
            self._send(_Open(clip))
        clip.open_rules.add(rule.name)
        clip.events.append(replace(event, snapshot=snapshot, clip=str(clip.path)).record())
        return snapshot, str(clip.path)

    def end(self, event: Event) -> str | None:
        s = self._live.get(event.stream)
        clip = s.clip if s is not None else None
        rule = self._by_name.get(event.rule)
        if clip is None or rule is None or rule.name not in clip.open_rules:
            return None
        clip.open_rules.discard(rule.name)
        clip.until_s = max(clip.until_s, event.time_s + rule.post_roll_s)
        clip.events.append(replace(event, clip=str(clip.path)).record())
        return str(clip.path)

    def stream_ended(self, stream: str) -> None:
        s = self._live.pop(stream, None)
        if s is not None and s.clip is not None:
            self._send(_Finish(s.clip))
        self._send(_Forget(stream))

    def close(self) -> None:
        """Every open clip ends at its last frame handed over; the worker gets CLOSE_S to write them."""
        if self.closed:
            return
        self.closed = True
        for stream in list(self._live):
            self.stream_ended(stream)
        with self._cond:
            self._deadline = time.monotonic() + CLOSE_S
            self._inbox.append(_STOP)
            self._cond.notify()
        self._worker.join(CLOSE_S + 5.0)
        if self._worker.is_alive():
            self.last_error = f"the clips worker did not finish within {CLOSE_S + 5.0:g} s; open clips stay .partial"

    def summary(self) -> dict:
        streams = {name: dict(f.__dict__) for name, f in sorted(dict(self._figures).items())}  # a copy: the worker adds
        return {"folder": str(self.folder), "clips": len(self.clips), "clip_list": self.clips[-100:],
                "snapshots": self.snapshots, "snapshots_dropped": self.snapshots_dropped,
                "frames_encoded": self.frames_encoded, "frames_dropped": self.frames_dropped,
                "frames_skipped_at_close": self.frames_skipped_at_close,
                "clips_truncated": self.clips_truncated, "clips_failed": self.clips_failed, "errors": self.errors,
                "last_error": self.last_error, "buffer_bound_mb": self.buffer_mb, "handoff_frames": HANDOFF_FRAMES,
                "streams": streams}

    def _stream(self, name: str) -> _Live:
        s = self._live.get(name)
        if s is None:
            s = self._live[name] = _Live()
        return s

    def _snapshot(self, s: _Live, event: Event, annotated) -> str | None:
        with self._cond:
            if self._pending_snapshots >= PENDING_SNAPSHOTS:
                self.snapshots_dropped += 1
                return None
            self._pending_snapshots += 1
        path = self.names.reserve(self.folder / SNAPSHOTS,
                                  f"{safe(event.stream)}-{safe(event.rule)}-{event.frame}", ".jpg")
        same = s.last_index if s.last_image is annotated else None  # its JPEG is already on its way
        self._send(_Snapshot(event.stream, path, same, annotated))
        return str(path)

    def _send(self, message) -> None:
        with self._cond:
            self._inbox.append(message)
            self._cond.notify()

    def _drop_oldest(self) -> None:
        """Under the lock: the oldest frame still waiting makes room (control messages are never dropped)."""
        for i, message in enumerate(self._inbox):
            if isinstance(message, _Frame):
                del self._inbox[i]
                self.frames_dropped += 1
                if message.clip is not None:
                    message.clip.dropped += 1
                return

    # ---- the worker thread

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._inbox:
                    self._cond.wait()
                message = self._inbox.popleft()
                if isinstance(message, _Frame):
                    self._pending_frames -= 1
                elif isinstance(message, _Snapshot):
                    self._pending_snapshots -= 1
            if message is _STOP:
                return
            try:
                self._handle(message)
            except Exception as exc:  # noqa: BLE001 - counted and reported; the worker goes on
                self._error(exc)

    def _handle(self, message) -> None:
        if isinstance(message, _Frame):
            self._frame(message)
        elif isinstance(message, _Open):
            self._open(message.clip)
        elif isinstance(message, _Finish):
            self._finish(message.clip)
        elif isinstance(message, _Snapshot):
            self._write_snapshot(message)
        elif isinstance(message, _Forget):
            self._buffers.pop(message.stream, None)

    def _frame(self, f: _Frame) -> None:
        if self._deadline is not None and f.clip is None:
            self.frames_skipped_at_close += 1  # a pre-roll no clip will use
            return
        buffer = self._buffer(f.stream)
        ok, jpeg = cv2.imencode(".jpg", f.image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if ok:
            evicted = buffer.evicted_by_bytes
            buffer.add(Encoded(f.index, f.time_s, jpeg))
            self.frames_encoded += 1
            figures = self._figures[f.stream]
            figures.peak_buffer_bytes = max(figures.peak_buffer_bytes, buffer.peak_bytes)
            figures.evicted_by_bytes += buffer.evicted_by_bytes - evicted
        if f.clip is not None:
            self._write(f.clip, f.image, f.index, f.time_s)

    def _open(self, clip: Clip) -> None:
        buffer = self._buffer(clip.stream)
        fps = buffer.fps(DEFAULT_FPS)
        for e in buffer.since(clip.from_s):
            if clip.failed or clip.truncated:
                break
            self._write(clip, cv2.imdecode(e.jpeg, cv2.IMREAD_COLOR), e.index, e.time_s, fps)

    def _write(self, clip: Clip, image: np.ndarray, index: int, time_s: float, fps: float | None = None) -> None:
        if self._deadline is not None and time.monotonic() > self._deadline:
            clip.truncated = True
        try:
            clip.write(image, index, time_s, fps or self._buffer(clip.stream).fps(DEFAULT_FPS))
        except Exception as exc:  # noqa: BLE001 - this clip is lost (counted); the others and the snapshots go on
            self._fail(clip, self._error(exc))

    def _finish(self, clip: Clip) -> None:
        if clip.failed:
            return
        try:
            path = clip.finish(self.names)
        except Exception as exc:  # noqa: BLE001 - as in _write
            self._fail(clip, self._error(exc))
            return
        if path is not None:
            self.clips.append(str(path))
            self.clips_truncated += clip.truncated

    def _error(self, exc: BaseException) -> str:
        self.errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        return self.last_error

    def _fail(self, clip: Clip, why: str) -> None:
        if clip.failed is None:
            clip.failed = why
            self.clips_failed += 1
            clip.abandon(self.names)

    def _write_snapshot(self, snap: _Snapshot) -> None:
        buffer = self._buffers.get(snap.stream)
        newest = buffer.newest() if buffer is not None else None
        if newest is not None and newest.index == snap.index:
            data = newest.jpeg
        else:
            ok, data = cv2.imencode(".jpg", snap.image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if not ok:
                raise ValueError(f"snapshot {snap.path.name}: the frame could not be encoded")
        write_file(self.names, snap.path, data.tobytes())
        self.snapshots += 1

    def _buffer(self, stream: str) -> PreRoll:
        buffer = self._buffers.get(stream)
        if buffer is None:
            keep_s = self.rules.max_pre_roll_s(stream) + MARGIN_S
            buffer = self._buffers[stream] = PreRoll(keep_s, self.max_bytes)
            self._figures.setdefault(stream, _Figures(keeps_s=keep_s))
        return buffer
