"""Every kind of output a stream can have, registered once: adding a kind touches this module and its flag.

A kind reads its own run setting (the Config field named by `key`), says what it targets for one stream (a
path, a window title, the preview's stream name, or None when the stream has none), checks that target
before the model loads, and opens the sink. `shared` kinds may serve several streams from one target (a
predictions log without {stream}): they are opened once and each stream writes through its own handle.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from stream.media.sources import SourceInfo
from stream.media.streams import StreamSpec, output_path
from stream.outputs.claims import Claim, Claims, input_files
from stream.outputs.sinks import PredictionsLog, Sink, VideoFileSink, WindowSink, check_writable


@dataclass(frozen=True)
class OpenContext:
    name: str
    info: SourceInfo
    streams: int  # streams in the run when this one opened (a lone stream's window has the plain title)
    codec: str
    server: Any = None  # stream.web.server.PreviewServer under --serve


@dataclass(frozen=True)
class OutputKind:
    key: str  # the run setting (Config field) it reads
    flag: str
    target: Callable[[Any, str, int], str | None]  # (setting, stream name, streams) → target or None
    open: Callable[[str, OpenContext], Sink]
    check: Callable[[str, str], None] = lambda target, flag: None
    shared: bool = False
    file: bool = False  # its target is a file path, which must not be an input or another output


def _path(flag: str):
    def target(template: str | None, name: str, streams: int) -> str | None:
        return output_path(template, name, streams, flag)

    return target


def _video(path: str, ctx: OpenContext) -> Sink:
    return VideoFileSink(path, ctx.info.fps or 30.0, ctx.info.width, ctx.info.height, ctx.codec)


def _window_title(on: bool, name: str, streams: int) -> str | None:
    if not on:
        return None
    return f"{name} (q to quit)" if streams > 1 else WindowSink.TITLE


KINDS: tuple[OutputKind, ...] = (
    OutputKind("output", "--output", _path("--output"), _video, check_writable, file=True),
    OutputKind("predictions", "--predictions", _path("--predictions"), lambda path, ctx: PredictionsLog(path),
               check_writable, shared=True, file=True),
    OutputKind("display", "--display", _window_title, lambda title, ctx: WindowSink(title)),
    OutputKind("serve", "--serve", lambda server, name, streams: name if server is not None else None,
               lambda name, ctx: ctx.server.add_stream(name)),
)


@dataclass
class Outputs:
    """A run's outputs: the settings by kind, and the shared sinks opened so far (kept for the streams that join
    later; closed when the last stream using them is)."""

    settings: Mapping[str, Any]  # kind key → the run's setting (a path template, True for a window, the server)
    codec: str = "auto"
    shared: dict[tuple[str, str], Any] = field(default_factory=dict)
    claims: Claims = field(default_factory=Claims)  # every file read or written so far, joined streams' too

    def targets(self, name: str, streams: int) -> list[tuple[OutputKind, str]]:
        """The kinds this stream has, in registration order, each with its target."""
        found = []
        for kind in KINDS:
            target = kind.target(self.settings.get(kind.key), name, streams)
            if target:
                found.append((kind, target))
        return found

    def check(self, specs: list[StreamSpec], run_files: list[tuple[str, str | None]] = ()) -> list[tuple]:
        """Before anything is opened: no output on an input or on another output (`run_files`: the run's own, as
        (flag, path)), and every target writable; one line naming the flag otherwise (a flag's streams one after
        another, the flags in registration order). Returns what it claimed, for `release`."""
        names = [s.name for s in specs]
        found = [(name, pair) for name in names for pair in self.targets(name, len(names))]
        inputs = [(path, s.name) for s in specs for path in input_files(s.uri)]
        outputs = [(target, Claim(kind.flag, name, kind.shared)) for name, (kind, target) in found if kind.file]
        outputs += [(path, Claim(flag, "run")) for flag, path in run_files if path]
        self.claims.check(inputs, outputs)
        for _, (kind, target) in sorted(found, key=lambda pair: KINDS.index(pair[1][0])):
            kind.check(target, kind.flag)
        return self.claims.record(inputs, outputs)

    def release(self, claimed: list[tuple]) -> None:
        """A stream that did not join after all: its files are free again."""
        self.claims.release(claimed)

    def open(self, name: str, info: SourceInfo, streams: int) -> list[Sink]:
        """One stream's sinks; anything opened is closed again if a later one fails."""
        ctx = OpenContext(name, info, streams, self.codec, self.settings.get("serve"))
        sinks: list[Sink] = []
        try:
            for kind, target in self.targets(name, streams):
                if kind.shared:
                    log = self.shared.get((kind.key, target))
                    if log is None or log.closed:
                        log = self.shared[(kind.key, target)] = kind.open(target, ctx)
                    sinks.append(log.for_stream(name))
                else:
                    sinks.append(kind.open(target, ctx))
        except BaseException:
            for sink in sinks:
                sink.close()
            raise
        return sinks
