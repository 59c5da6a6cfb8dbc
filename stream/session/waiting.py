"""Streams of a service (`--keep-running`, `--serve`) whose camera did not answer at start: they wait outside
the run and are tried again in the background until they join, so one dead camera at boot neither stops
the service nor drops out of its sources file. A stream that fails once it is in the run is the capture
thread's to reconnect (stream.pipeline.capture); this is only for the ones that never opened.

Files and folders are not waited for: a path that does not open is a mistake to fix, reported at start."""

from __future__ import annotations

import random
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

from stream.errors import NameTaken, NotReady, UserError
from stream.media.sources import URL_SCHEMES, is_camera_index
from stream.media.streams import StreamSpec
from stream.pipeline.capture import Reconnect
from stream.redact import mask_uri, scrub

RETRY = Reconnect(enabled=True, first_s=2.0, cap_s=60.0)
PARALLEL = 8  # attempts in flight at once; each is a thread blocked on its camera's open, not on a core


def waits_when_down(uri: str) -> bool:
    """A camera or a stream URL: down now, up later. A file is either there or a mistake."""
    return is_camera_index(uri) or uri.lower().startswith(URL_SCHEMES)


@dataclass
class Waiting:
    spec: StreamSpec
    why: str  # the last attempt's one-line error
    listed: bool  # from the sources file (--persist keeps it there), not --source
    attempts: int = 1


class WaitingStreams:
    """The streams waiting to join, and the thread that tries them: `join` is the run's add_stream, called
    from that thread's attempts only (each blocks up to the URL open timeout, never the run's loop; the run's
    add_stream takes calls from several threads, as the REST API's)."""

    def __init__(self, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[str, Waiting] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rng = random.Random(seed)

    def add(self, spec: StreamSpec, why: str, listed: bool) -> None:
        with self._lock:
            self._waiting[spec.name] = Waiting(spec, why, listed)
        print(f"warning: stream {spec.name!r}: {why}; the service tries it again in the background and it joins "
              "when it answers (DELETE /api/streams/NAME stops that)", file=sys.stderr, flush=True)

    def names(self) -> set[str]:
        with self._lock:
            return set(self._waiting)

    def listed(self) -> list[StreamSpec]:
        with self._lock:
            return [w.spec for w in self._waiting.values() if w.listed]

    def entry(self, name: str) -> Waiting | None:
        with self._lock:
            return self._waiting.get(name)

    def listing(self) -> list[dict]:
        with self._lock:
            return [{"name": w.spec.name, "uri": mask_uri(w.spec.uri), "target_fps": w.spec.target_fps,
                     "state": "waiting", "attempts": w.attempts, "error": scrub(w.why)}
                    for w in self._waiting.values()]

    def drop(self, name: str) -> bool:
        with self._lock:
            return self._waiting.pop(name, None) is not None

    def start(self, join: Callable[[Waiting], object], leave: Callable[[str], object]) -> None:
        """`join`: add the stream to the run (the run's checks); `leave`: take it out again (a DELETE that came
        while its attempt was in flight)."""
        if self._thread is None and self._waiting:
            self._thread = threading.Thread(target=self._work, args=(join, leave), name="waiting-streams",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            # Not the attempt in flight (up to the URL open timeout): a stop must not wait on a dead camera. It
            # finds the run ended (NotReady) and closes what it opened.
            self._thread.join(timeout=0.5)

    def _work(self, join: Callable[[Waiting], object], leave: Callable[[str], object]) -> None:
        attempt = 1
        while not self._stop.wait(RETRY.delay(attempt, self._rng)):
            with self._lock:
                due = list(self._waiting.values())
            if not due:
                return
            for start in range(0, len(due), PARALLEL):
                if not self._round(due[start:start + PARALLEL], join, leave):
                    return
            attempt += 1

    def _round(self, due: list[Waiting], join: Callable[[Waiting], object], leave: Callable[[str], object]) -> bool:
        """Up to PARALLEL streams tried at once, each on a thread of its own: a camera that accepts and never
        answers holds its own attempt for the whole open timeout (10 s), not the others' (one after another,
        eight such cameras kept a ninth that was back waiting 80 s a round). False: the stop came."""
        attempts = []
        for entry in due:
            if self._stop.is_set():
                return False
            if self._still_waiting(entry):
                thread = threading.Thread(target=self._try, args=(entry, join, leave),
                                          name=f"waiting-{entry.spec.name}"[:64], daemon=True)
                thread.start()
                attempts.append(thread)
        for thread in attempts:
            while thread.is_alive():  # not a plain join: a stop must not wait on a dead camera
                if self._stop.wait(0.05):
                    return False
        return True

    def _still_waiting(self, entry: Waiting) -> bool:
        return self.entry(entry.spec.name) is entry

    def _try(self, entry: Waiting, join: Callable[[Waiting], object], leave: Callable[[str], object]) -> None:
        try:
            join(entry)
        except NameTaken:  # given up (a DELETE) while this attempt began, or its name taken meanwhile
            if self.drop(entry.spec.name):
                print(f"warning: stream {entry.spec.name!r}: no longer waited for (a stream of that name joined)",
                      file=sys.stderr, flush=True)
        except NotReady:
            if not self._stop.is_set():
                with self._lock:
                    entry.attempts += 1
        except UserError as exc:
            with self._lock:
                entry.attempts += 1
                entry.why = str(exc)
        except Exception as exc:  # noqa: BLE001 - a fault in one attempt must not end the retries of all
            with self._lock:
                entry.attempts += 1
                entry.why = f"{type(exc).__name__}: {exc}"
        else:
            if not self._still_waiting(entry):  # removed while the attempt was in flight: it does not stay
                try:
                    leave(entry.spec.name)
                except UserError as exc:
                    print(f"warning: stream {entry.spec.name!r}: {exc}", file=sys.stderr, flush=True)
                return
            self.drop(entry.spec.name)
            print(f"stream {entry.spec.name!r} answered after {entry.attempts} attempt(s): joined the run",
                  flush=True)
