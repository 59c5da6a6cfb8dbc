"""Which files a run reads and writes, so that no output ever lands on an input or on another output.

Checked before anything is opened (ffmpeg refuses "Output same as Input" the same way): `vids/{stream}.mp4`
with inputs in vids/ would otherwise replace the very clips being read. Paths are compared after resolving
links, and by device and inode where the file exists (a hard link is the same file under another name).
Streams that join a run later are checked against everything claimed so far.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from stream.errors import UserError


@dataclass(frozen=True)
class Claim:
    flag: str  # --output, --predictions, --report, or "--source" for an input
    owner: str  # the stream (or "run") that reads or writes it
    shared: bool = False  # one file several streams write through (a predictions log without {stream})


def _identity(path: str) -> tuple:
    """What makes two paths the same file: (device, inode) if it exists, else the resolved path."""
    resolved = os.path.realpath(path)
    try:
        st = os.stat(resolved)
    except OSError:
        return ("path", resolved)
    return ("inode", st.st_dev, st.st_ino)


@dataclass
class Claims:
    by_file: dict[tuple, tuple[str, Claim]] = field(default_factory=dict)  # identity → (path as given, claim)

    def check(self, inputs: list[tuple[str, str]], outputs: list[tuple[str, Claim]]) -> None:
        """One line for the first clash of an output with an input or with another output; nothing is recorded."""
        seen = dict(self.by_file)
        for path, owner in inputs:
            _note(seen, path, Claim("--source", owner))
        for path, claim in outputs:
            _note(seen, path, claim)

    def record(self, inputs: list[tuple[str, str]], outputs: list[tuple[str, Claim]]) -> list[tuple]:
        """Recorded, once `check` passed (and the targets proved writable); returns the files newly claimed (for
        `release`)."""
        claims = [(path, Claim("--source", owner)) for path, owner in inputs] + list(outputs)
        added = []
        for path, claim in claims:
            key = _identity(path)
            if key not in self.by_file:
                self.by_file[key] = (path, claim)
                added.append(key)
        return added

    def release(self, keys: list[tuple]) -> None:
        """Forget what `record` claimed for a stream that did not join after all."""
        for key in keys:
            self.by_file.pop(key, None)


def _note(seen: dict, path: str, claim: Claim) -> None:
    key = _identity(path)
    before = seen.get(key)
    if before is None:
        seen[key] = (path, claim)
        return
    other_path, other = before
    if claim.flag == other.flag == "--source" or (claim.shared and other.shared and claim.flag == other.flag):
        return  # two streams reading one file, or streams sharing one log, is what the user asked for
    if claim == other:
        return  # the same stream checked again (a retry of a stream that failed to join)
    raise UserError(f"{claim.flag} {path}: {_describe(other_path, other)}; an output must never replace an "
                    f"input or another output: choose another path")


def _describe(path: str, claim: Claim) -> str:
    if claim.flag == "--source":
        return f"is the input of stream {claim.owner!r}" + (f" ({path})" if claim.owner != path else "")
    whose = f" of stream {claim.owner!r}" if claim.owner != "run" else ""
    return f"is already the {claim.flag} file{whose} ({path})"


def input_files(uri: str) -> list[str]:
    """The local files a source reads (a folder's images each), for the clash check."""
    from stream.media.sources import image_files, local_path

    path = local_path(uri)
    if path is None:
        return []
    if path.is_dir():
        return [str(p) for p in image_files(path)] + [str(path)]
    return [str(path)]
