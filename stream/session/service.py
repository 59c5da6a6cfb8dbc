"""What a run lends the `--serve` server's REST API (stream.web.api.StreamControl): the streams in the run, one
added, one removed, in the JSON the API answers with. Each call blocks (a source opens, outputs are finalised)
and raises the run's one-line UserErrors; the API runs them in its own threads."""

from __future__ import annotations

from dataclasses import asdict, is_dataclass
from typing import Protocol

from stream.media.streams import StreamSpec, check_name, name_from_uri
from stream.redact import mask_uri
from stream.session.records import StreamSlot


class Changes(Protocol):  # stream.session.orchestrator.Run
    specs: list[StreamSpec]  # the streams given at start
    session: object | None  # None while the model loads
    waiting: object  # stream.session.waiting.WaitingStreams: cameras that did not answer at start

    def present(self) -> list[StreamSlot]: ...

    def leaving(self, slot: StreamSlot) -> bool: ...

    def add_stream(self, spec: StreamSpec, rename: bool = False) -> StreamSlot: ...

    def remove_stream(self, name: str) -> list: ...


class ServiceControl:
    def __init__(self, run: Changes) -> None:
        self.run = run

    def streams(self) -> list[dict]:
        waiting = self.run.waiting.listing()
        if self.run.session is None:  # the model is loading: the streams given at start, not opened yet
            return [{"name": s.name, "uri": mask_uri(s.uri), "target_fps": s.target_fps, "state": "starting"}
                    for s in self.run.specs] + waiting
        return [{**about(slot), "state": "removing"} if self.run.leaving(slot) else about(slot)
                for slot in self.run.present()] + waiting

    def add(self, uri: str, name: str | None, target_fps: float | None) -> dict:
        """A name made from the URI gets -2, -3, ... when taken; a name given must be free (NameTaken)."""
        if name is not None:
            check_name(name, "name")  # Invalid: the API's 400
        spec = StreamSpec(uri, name or name_from_uri(uri), target_fps)
        return about(self.run.add_stream(spec, rename=name is None))

    def remove(self, name: str) -> list[dict]:
        return [summary_json(s) for s in self.run.remove_stream(name)]


def about(slot: StreamSlot) -> dict:
    return {"name": slot.name, "uri": mask_uri(slot.spec.uri), "target_fps": slot.plan.target_fps}


def summary_json(summary: object) -> dict:
    """A sink's summary (stream.outputs.sinks: VideoSummary, LogSummary, ...) as `{"kind": "video", ...}`."""
    kind = type(summary).__name__.removesuffix("Summary").lower() or "output"
    fields = asdict(summary) if is_dataclass(summary) and not isinstance(summary, type) else {}
    return {"kind": kind, **fields}
