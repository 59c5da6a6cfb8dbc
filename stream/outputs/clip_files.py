"""The --clips folder's files: names that never overwrite, and files that appear only once whole.

Each file is written as a hidden `.NAME.partial.EXT` beside its final name, then hard-linked to the final name
(which fails if that name exists: nothing is ever replaced) and the partial unlinked. A clip cut short by a
kill stays `.partial`, never mistaken for a finished one.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
from pathlib import Path

from stream.errors import UserError

UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
SNAPSHOTS = "snapshots"


def check_folder(path: str) -> None:
    """--clips DIR (and DIR/snapshots) exist and can be written, created if missing; one line if not."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--clips {path}: is a file; give a folder")
    try:
        (folder / SNAPSHOTS).mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=folder / SNAPSHOTS)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        why = exc.strerror or exc
        raise UserError(f"--clips {path}: cannot be written ({why}); choose a writable folder") from None


def safe(part: str) -> str:
    """One path component of safe characters (stream and rule names already are; a test's may not be)."""
    return UNSAFE.sub("_", part)[:80] or "_"


def partial(final: Path) -> Path:
    return final.with_name(f".{final.stem}.partial{final.suffix}")


class Names:
    """Final names handed out and not yet on disk: two events in one second get `-2`, never the same file."""

    def __init__(self) -> None:
        self._held: set[Path] = set()
        self._lock = threading.Lock()

    def reserve(self, folder: Path, stem: str, ext: str, beside: str | None = None) -> Path:
        """The first free of STEM.EXT, STEM-2.EXT, ...; `beside`: STEM.BESIDE must be free too (a clip's sidecar)."""
        with self._lock:
            n = 1
            while True:
                path = folder / f"{stem}{'' if n == 1 else f'-{n}'}{ext}"
                if self._free(path) and (beside is None or self._free(path.with_suffix(beside))):
                    self._held.add(path)
                    return path
                n += 1

    def _free(self, path: Path) -> bool:
        return path not in self._held and not path.exists() and not partial(path).exists()

    def publish(self, written: Path, final: Path) -> Path:
        """`written` under `final`'s name, or the next free one if something else took it meanwhile."""
        try:
            for _ in range(1000):  # another writer taking each next name too: give up, the partial stays
                try:
                    os.link(written, final)
                except FileExistsError:
                    pass
                except OSError:  # a file system without hard links: the check and the rename are not atomic
                    if not final.exists():
                        os.rename(written, final)
                        return final
                else:
                    os.unlink(written)
                    return final
                self.release(final)
                final = self.reserve(final.parent, final.stem, final.suffix)
            raise FileExistsError(f"{final.parent}: no free name for {written.name}")
        finally:
            self.release(final)

    def release(self, final: Path) -> None:
        with self._lock:
            self._held.discard(final)


def write_file(names: Names, final: Path, data: bytes) -> Path:
    written = partial(final)
    with open(written, "wb") as f:
        f.write(data)
    return names.publish(written, final)
