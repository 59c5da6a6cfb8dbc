"""On-disk cache of built artifacts (ONNX models, TensorRT engines), each with a JSON sidecar.

The key is a hash of every field the artifact depends on (model, weights hash, input shape, batch
range, precision, library/GPU versions). The sidecar records those fields and the artifact's
checksum; an artifact is used only when its sidecar matches the fields asked for and its bytes match
the checksum. Anything else is a miss with a reason, and the caller rebuilds. Files are written to a
temporary name and renamed, sidecar last, so a crash mid-write never leaves a usable-looking entry.

A cached artifact runs as given (an ONNX graph, a TensorRT engine), so the cache must be the user's own: a
folder another user owns or can write into (group/others write without the sticky bit) is not used; the run
gets a private temporary cache instead, with a one-line warning. A folder another library fills by itself
(ONNX Runtime's TensorRT engines) is keyed and sidecar-checked the same way (`folder`, `seal`).
"""

from __future__ import annotations

import atexit
import fcntl
import functools
import hashlib
import json
import os
import shutil
import stat
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

from models.spec import check_model_name, file_sha256
from stream.backends.progress import BuildProgress
from stream.errors import UserError

T = TypeVar("T")

SIDECAR_FORMAT = 3  # 3: model metadata records the resize interpolation


def default_root() -> Path:
    env = os.environ.get("STREAM_CLASSIFIER_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "stream-classifier"


def exposure(folder: Path) -> str | None:
    """Why another user could plant or swap files in `folder`, or None when only its owner (this user) can."""
    info = folder.stat()
    if info.st_uid != os.getuid():
        return f"owned by uid {info.st_uid}, not by you (uid {os.getuid()})"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX:
        who = "others" if info.st_mode & stat.S_IWOTH else "its group"
        return f"writable by {who} (mode {info.st_mode & 0o7777:o})"
    return None


@functools.cache
def trusted_root(root: Path) -> Path:
    """`root` (made private if it is new), or, when it or a folder in it is exposed to other users, a private
    temporary cache for this process, said in one line (once per process and root)."""
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        folders = [root, *(p for p in root.iterdir() if p.is_dir())]
        why = next(((f, reason) for f in folders if (reason := exposure(f))), None)
    except OSError:
        return root  # unreadable or not creatable: store() says so, with the fix
    if why is None:
        return root
    private = _private_folder()
    folder, reason = why
    fix = f"chmod go-w {folder}" if "writable" in reason else "pass a --cache-dir of your own"
    print(f"warning: not using the cache {root}: {folder} is {reason}, so another user could replace what it "
          f"holds; using a private temporary cache (exports and engines are rebuilt this run); fix: {fix}",
          file=sys.stderr, flush=True)
    return private


def _private_folder() -> Path:
    """A folder only this user can use, removed when the process exits."""
    private = Path(tempfile.mkdtemp(prefix="stream-classifier-cache-"))
    atexit.register(shutil.rmtree, private, ignore_errors=True)
    return private


def cache_key(fields: dict) -> str:
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class Lookup:
    artifact: Path
    sidecar: Path
    hit: bool
    reason: str  # why it missed ("" on a hit); "not cached yet" for a plain first build
    meta: dict = field(default_factory=dict)  # the sidecar's extra records on a hit

    @property
    def stale(self) -> bool:
        """A miss on something that was there but unusable: the user is told it is rebuilt."""
        return not self.hit and self.reason != "not cached yet"


class Unusable(Exception):
    """Raised by an artifact's reader: the entry passed its checks but cannot be used; the message says why."""


@dataclass(frozen=True)
class Build(Generic[T]):
    """What a miss builds, made ready (weights loaded, frames read) before the timed build starts."""

    announce: str  # the build's first line: what is built, that it happens once, where it is kept
    write: Callable[[Path, BuildProgress], dict | None]  # the artifact into this path; extra sidecar records
    result: Callable[[Path], T]  # the value of the artifact just stored
    meta: dict = field(default_factory=dict)  # sidecar records known before the build


@dataclass(frozen=True)
class Loaded(Generic[T]):
    value: T
    artifact: Path
    cache: str  # "hit" | "miss" | "miss (<what changed> changed: ...)" | "rebuilt (<why the cached one was unusable>)"
    build_s: float | None  # the build's own time when it ran now
    load_s: float  # reading the hit, or the just-built artifact, into its runtime


class ArtifactCache:
    def __init__(self, root: str | Path | None = None) -> None:
        self.root = trusted_root(Path(root) if root else default_root())
        self._held: dict[Path, IO] = {}  # folders this process fills, locked until sealed

    def paths(self, kind: str, fields: dict, suffix: str) -> tuple[Path, Path]:
        stem = f"{check_model_name(fields.get('model', kind))}-{cache_key(fields)}"
        folder = self.root / kind
        return folder / f"{stem}{suffix}", folder / f"{stem}{suffix}.json"

    def lookup(self, kind: str, fields: dict, suffix: str) -> Lookup:
        artifact, sidecar = self.paths(kind, fields, suffix)

        def miss(reason: str) -> Lookup:
            return Lookup(artifact, sidecar, False, reason)

        if not sidecar.exists():
            return miss("not cached yet" if not artifact.exists() else "its sidecar is missing")
        record, reason = _checked_record(sidecar, fields)
        if record is not None and artifact.name not in record["files"]:
            reason = "its sidecar is corrupt"
        reason = reason or _changed_file(artifact.parent, record["files"])
        return miss(reason) if reason else Lookup(artifact, sidecar, True, "", record.get("meta", {}))

    def folder(self, kind: str, fields: dict) -> Path:
        """A folder that another library fills with cache files of its own and loads them from, keyed like an
        artifact. It is used as it was when `seal` last listed it (the files, their checksums, nothing else);
        otherwise (first use, other settings, a file changed or added since, as by a run that crashed) it is
        emptied first, and the library builds again. One process holds it until `seal`; another one meanwhile
        (a second replica on the node) gets a private folder of its own, used once."""
        path, sidecar = self.paths(kind, fields, "")
        if path in self._held:
            return path
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            lock = open(path.with_name(path.name + ".lock"), "w")  # held until seal()
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                return _private_folder()
            self._held[path] = lock
            record, reason = _checked_record(sidecar, fields) if sidecar.exists() else (None, "new")
            if reason is None:
                added = {p.name for p in path.iterdir()} - set(record["files"]) if path.is_dir() else {"all"}
                reason = f"{min(added)} is not in its sidecar" if added else _changed_file(path, record["files"])
            if reason is not None:
                sidecar.unlink(missing_ok=True)  # a folder being filled has no sidecar until it is sealed
                shutil.rmtree(path, ignore_errors=True)
                path.mkdir(mode=0o700)
        except OSError as exc:
            raise UserError(f"cannot write to the cache {self.root} ({exc.strerror or exc}); "
                            "pass a writable --cache-dir") from None
        return path

    def seal(self, kind: str, fields: dict) -> None:
        """Record what the folder holds now that its library is done with it (the next `folder` checks it), and
        let it go; nothing for a folder this process did not hold."""
        path, sidecar = self.paths(kind, fields, "")
        lock = self._held.pop(path, None)
        if lock is None:
            return
        try:
            files = sorted(p for p in path.iterdir() if p.is_file())
            record = {"format": SIDECAR_FORMAT, "fields": fields, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                      "files": {f.name: {"size": f.stat().st_size, "sha256": file_sha256(f)} for f in files}}
            _write_atomic(sidecar, json.dumps(record, indent=1) + "\n")
        except OSError:
            pass  # unsealed, the next run empties it and builds again: slower, never wrong
        finally:
            lock.close()

    def nearest_other(self, kind: str, fields: dict) -> str | None:
        """Why a new entry is not one already cached: the settings in which the closest cached entry of the
        same model, artifact and precision differs ("calibration_frames 32 != 64"), or None."""
        folder = self.root / kind
        best: list[str] | None = None
        for sidecar in folder.glob(f"{fields.get('model', kind)}-*.json") if folder.is_dir() else ():
            try:
                other = json.loads(sidecar.read_text(encoding="utf-8"))["fields"]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            same = ("model", "artifact", "precision")
            if other == fields or any(other.get(k) != fields.get(k) for k in same):
                continue
            diffs = [f"{k} {other.get(k)!r} != {fields.get(k)!r}" for k in sorted(set(other) | set(fields))
                     if other.get(k) != fields.get(k)]
            if best is None or len(diffs) < len(best):
                best = diffs
        return "; ".join(best[:3]) if best else None

    def load_or_build(self, kind: str, fields: dict, suffix: str, *, label: str, again: str,
                      read: Callable[[Lookup], T], build: Callable[[], Build[T]],
                      changed: str | None = None) -> Loaded[T]:
        """The cached artifact read by `read`, or built by `build()` and stored when it is missing or unusable.

        `label` names it in messages ("ONNX model for alexnet") and `again` says what a rebuild does
        ("exporting it again"); with `changed` ("calibration settings"), a first build beside entries of other
        settings says which of them changed."""
        look = self.lookup(kind, fields, suffix)
        if look.hit:
            started = time.perf_counter()
            try:
                return Loaded(read(look), look.artifact, "hit", None, time.perf_counter() - started)
            except Unusable as exc:
                look = replace(look, hit=False, reason=str(exc))
        status = "miss"
        if look.stale:
            status = f"rebuilt ({look.reason})"
            print(f"cached {label} is unusable ({look.reason}); {again}", flush=True)
        elif changed and (other := self.nearest_other(kind, fields)) is not None:
            # A new entry beside the old one (a new calibration set, say), and the reason told.
            status = f"miss ({changed} changed: {other})"
            print(f"no cached {label} with these settings ({other}); {again.removesuffix(' it again')}", flush=True)
        recipe = build()
        meta: dict[str, Any] = dict(recipe.meta)
        with BuildProgress(recipe.announce) as progress:
            # store() writes the sidecar after `write`, so what the build reports lands in it.
            path = self.store(kind, fields, suffix, lambda tmp: meta.update(recipe.write(tmp, progress) or {}), meta)
        started = time.perf_counter()
        value = recipe.result(path)
        return Loaded(value, path, status, progress.elapsed_s, time.perf_counter() - started)

    def store(self, kind: str, fields: dict, suffix: str, write: Callable[[Path], None], meta: dict) -> Path:
        """`write(path)` writes the artifact (and any companion files beside it, named after it) in a
        staging folder; every file is checksummed into the sidecar and moved into place."""
        artifact, sidecar = self.paths(kind, fields, suffix)
        try:
            artifact.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            staging = Path(tempfile.mkdtemp(dir=artifact.parent, prefix=".tmp-"))
            try:
                write(staging / artifact.name)
                files = sorted(staging.iterdir())
                record = {"format": SIDECAR_FORMAT, "fields": fields,
                          "files": {f.name: {"size": f.stat().st_size, "sha256": file_sha256(f)} for f in files},
                          "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "meta": meta}
                sidecar.unlink(missing_ok=True)  # never new files under an old sidecar
                for f in files:
                    os.replace(f, artifact.parent / f.name)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            _write_atomic(sidecar, json.dumps(record, indent=1) + "\n")
        except OSError as exc:
            raise UserError(f"cannot write to the cache {self.root} ({exc.strerror or exc}); "
                            "pass a writable --cache-dir") from None
        return artifact


def _checked_record(sidecar: Path, fields: dict) -> tuple[dict | None, str | None]:
    """(the sidecar's record with `files` as {name: (size, sha256)}, None), or (None, why it is unusable)."""
    try:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
        if record.get("format") != SIDECAR_FORMAT:
            return None, f"its sidecar has format {record.get('format')!r}, not {SIDECAR_FORMAT}"
        recorded = record["fields"]
        record["files"] = {str(name): (int(f["size"]), str(f["sha256"])) for name, f in record["files"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None, "its sidecar is corrupt"
    if recorded != fields:
        diffs = [f"{k} {recorded.get(k)!r} != {fields.get(k)!r}" for k in sorted(set(recorded) | set(fields))
                 if recorded.get(k) != fields.get(k)]
        return None, "it was built for different settings: " + "; ".join(diffs[:3])
    return record, None


def _changed_file(folder: Path, files: dict[str, tuple[int, str]]) -> str | None:
    """Why one of `files` in `folder` is not as its sidecar recorded it, or None."""
    for name, (size, checksum) in files.items():
        path = folder / name
        try:
            actual_size = path.stat().st_size
        except OSError:
            return f"the artifact file {name} is missing"
        if actual_size != size or file_sha256(path) != checksum:
            return f"the artifact file {name} is corrupt (checksum mismatch)"
    return None


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
