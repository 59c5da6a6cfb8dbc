"""An output that already exists is replaced whole or not at all.

A new file is written in place (a viewer may follow it as it grows). An existing one is written beside itself
under a temporary name and renamed over the old file when it is complete, so a run that fails, or is killed,
never leaves a half-overwritten result: the old file stays until the new one is whole (the temporary one then
holds what was written, named `.NAME.partial-*`).
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path


class Staged:
    def __init__(self, path: str) -> None:
        self.path = path
        self.final = os.path.realpath(path)  # a link is followed, so the file it names is what gets replaced
        self.write_path = path
        if os.path.exists(self.final):
            final = Path(self.final)
            # The suffix stays last: the muxers choose the container by it.
            fd, self.write_path = tempfile.mkstemp(prefix=f".{final.stem}.partial-", suffix=final.suffix,
                                                   dir=final.parent)
            os.close(fd)
            os.chmod(self.write_path, stat.S_IMODE(os.stat(self.final).st_mode))

    @property
    def staged(self) -> bool:
        return self.write_path != self.path

    def commit(self) -> None:
        """The new file takes the old one's place (atomically, on one file system); idempotent."""
        if self.staged and os.path.exists(self.write_path):
            os.replace(self.write_path, self.final)


def write_text(text: str, path: str) -> None:
    """`path` holds `text`, or (if the write fails) what it held before: written beside it, on disk, then renamed."""
    staged = Staged(path)
    with open(staged.write_path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    staged.commit()


def write_json(data: dict, path: str) -> None:
    write_text(json.dumps(data, indent=2) + "\n", path)
