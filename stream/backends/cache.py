"""On-disk cache of built artifacts (ONNX models, TensorRT engines), each with a JSON sidecar.

The key is a hash of every field the artifact depends on (model, weights hash, input shape, batch
range, precision, library/GPU versions). The sidecar records those fields and the artifact's
checksum; an artifact is used only when its sidecar matches the fields asked for and its bytes match
the checksum. Anything else is a miss with a reason, and the caller rebuilds. Files are written to a
temporary name and renamed, sidecar last, so a crash mid-write never leaves a usable-looking entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Generic, TypeVar

from models.spec import file_sha256
from stream.backends.progress import BuildProgress
from stream.errors import UserError

T = TypeVar("T")

SIDECAR_FORMAT = 3  # 3: model metadata records the resize interpolation


def default_root() -> Path:
    env = os.environ.get("STREAM_CLASSIFIER_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "stream-classifier"


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
        self.root = Path(root) if root else default_root()

    def paths(self, kind: str, fields: dict, suffix: str) -> tuple[Path, Path]:
        stem = f"{fields.get('model', kind)}-{cache_key(fields)}"
        folder = self.root / kind
        return folder / f"{stem}{suffix}", folder / f"{stem}{suffix}.json"

    def lookup(self, kind: str, fields: dict, suffix: str) -> Lookup:
        artifact, sidecar = self.paths(kind, fields, suffix)

        def miss(reason: str) -> Lookup:
            return Lookup(artifact, sidecar, False, reason)

        if not sidecar.exists():
            return miss("not cached yet" if not artifact.exists() else "its sidecar is missing")
        try:
            record = json.loads(sidecar.read_text(encoding="utf-8"))
            if record.get("format") != SIDECAR_FORMAT:
                return miss(f"its sidecar has format {record.get('format')!r}, not {SIDECAR_FORMAT}")
            recorded = record["fields"]
            files = {str(name): (int(f["size"]), str(f["sha256"])) for name, f in record["files"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return miss("its sidecar is corrupt")
        if recorded != fields:
            diffs = [f"{k} {recorded.get(k)!r} != {fields.get(k)!r}" for k in sorted(set(recorded) | set(fields))
                     if recorded.get(k) != fields.get(k)]
            return miss("it was built for different settings: " + "; ".join(diffs[:3]))
        if artifact.name not in files:
            return miss("its sidecar is corrupt")
        for name, (size, checksum) in files.items():
            path = artifact.parent / name
            try:
                actual_size = path.stat().st_size
            except OSError:
                return miss(f"the artifact file {name} is missing")
            if actual_size != size or file_sha256(path) != checksum:
                return miss(f"the artifact file {name} is corrupt (checksum mismatch)")
        return Lookup(artifact, sidecar, True, "", record.get("meta", {}))

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
            artifact.parent.mkdir(parents=True, exist_ok=True)
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


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
