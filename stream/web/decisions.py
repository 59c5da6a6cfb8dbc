"""The decisions stage on `--serve`: `/api/events` (recent rule events, their counts, each output's delivery) and
`/api/timeline` (per stream: the steady label, the last minutes of label segments, and the charts' history).

Both are pure functions of the run loop's latest DecisionsView (immutable, replaced whole) and the server's
ChartHistory. Events are `Event.record()` as every output writes them, plus `links`: the URLs under `/clips/`
of their snapshot and clip when those lie in the --clips folder (stream.web.clips serves them).
The timeline is its own route, not part of /api/status: /api/status keeps the dashboard's figures only, and the
page polls the timeline at its own (slower) rate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from aiohttp import web

from stream.decisions.hub import RECENT_EVENTS, DecisionsView, StreamView
from stream.decisions.records import Event
from stream.observe.stats import StatsSnapshot
from stream.web.api import _error, _shown
from stream.web.history import ChartHistory

TIMELINE_S = 120.0  # of stream time, per stream
EVENT_PARAMS = ("stream", "rule", "limit", "token")  # the token is the guard's (stream.web.guard)
MAX_FILTER_CHARS = 128


@dataclass(frozen=True)
class EventQuery:
    stream: str | None = None
    rule: str | None = None
    limit: int = RECENT_EVENTS


def parse_event_query(query) -> EventQuery:
    """`?stream=&rule=&limit=`, or a 400 naming what is wrong (in one line)."""
    unknown = sorted(set(query) - set(EVENT_PARAMS))
    if unknown:
        raise _error(web.HTTPBadRequest, f"unknown parameter(s) {', '.join(_shown(k) for k in unknown)}; "
                                         "valid: stream, rule, limit")
    for key in EVENT_PARAMS:
        if len(query.getall(key, [])) > 1:
            raise _error(web.HTTPBadRequest, f"{key}: give it once")
    filters = {}
    for key in ("stream", "rule"):
        value = query.get(key)
        if value is not None and (not value or len(value) > MAX_FILTER_CHARS or not value.isprintable()):
            raise _error(web.HTTPBadRequest, f"{key}={_shown(value)}: a name of 1 to {MAX_FILTER_CHARS} printable "
                                             "characters")
        filters[key] = value
    text = query.get("limit")
    limit = RECENT_EVENTS
    if text is not None:
        if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= RECENT_EVENTS:
            raise _error(web.HTTPBadRequest, f"limit={_shown(text)}: a whole number from 1 to {RECENT_EVENTS}")
        limit = int(text)
    return EventQuery(filters["stream"], filters["rule"], limit)


def clip_link(path: str | None, clips_dir: Path | None) -> str | None:
    """The URL of a file the clip recorder wrote, relative to the page; None outside the --clips folder."""
    if path is None or clips_dir is None:
        return None
    try:
        relative = Path(path).resolve().relative_to(clips_dir)
    except (ValueError, OSError):
        return None
    return "clips/" + quote(relative.as_posix())


def event_record(event: Event, clips_dir: Path | None) -> dict:
    return {**event.record(), "links": {"snapshot": clip_link(event.snapshot, clips_dir),
                                        "clip": clip_link(event.clip, clips_dir)}}


def events_document(view: DecisionsView, q: EventQuery, clips_dir: Path | None) -> dict:
    chosen = [e for e in view.events if (q.stream is None or e.stream == q.stream) and
              (q.rule is None or e.rule == q.rule)]
    return {
        "events": [event_record(e, clips_dir) for e in chosen[-q.limit:]],
        "counts": [{"rule": rule, "label": label, "type": kind, "events": n}
                   for rule, label, kind, n in view.counts],
        "delivery": [d.__dict__ for d in view.deliveries],
    }


def _round(value: float) -> float:
    return round(value, 3)


def stream_timeline(s: StreamView, window_s: float = TIMELINE_S) -> dict:
    """The last `window_s` of stream time. A looped file's clock starts again at 0: segments of an earlier pass
    (ending after now) are left out."""
    since = s.now_s - window_s
    shown = [seg for seg in (*s.segments, *((s.open,) if s.open else ())) if since < seg.end_s <= s.now_s]
    steady = None if s.steady is None else {"label": s.steady.label, "prob": round(s.steady.prob, 4),
                                            "since_s": _round(s.steady.since_s)}
    return {"name": s.name, "now_s": _round(s.now_s), "window_s": window_s, "steady": steady,
            "segments": [{"label": seg.label, "start_s": _round(max(seg.start_s, since)),
                          "end_s": _round(seg.end_s)} for seg in shown]}


def targets(snap: StatsSnapshot | None) -> dict[str, dict]:
    """Each stream's target fps and latency budget (its real-time verdict's), for the charts' lines."""
    out = {}
    for row in snap.streams if snap is not None else ():
        v = row.snap.verdict
        out[row.name] = {"target_fps": None if v is None else v.target_fps,
                         "budget_ms": None if v is None or v.budget_ms is None else round(v.budget_ms, 1)}
    return out


def timeline_document(view: DecisionsView, history: ChartHistory, snap: StatsSnapshot | None,
                      names: list[str]) -> dict:
    """Every stream the page shows: its decisions (null before its first frame, or without --rules) and charts."""
    decided = {s.name: s for s in view.streams}
    goals = targets(snap)
    return {"streams": [{"name": name,
                         "decisions": stream_timeline(decided[name]) if name in decided else None,
                         **goals.get(name, {"target_fps": None, "budget_ms": None}),
                         "history": history.series(name)} for name in names]}


class DecisionsRoutes:
    """The handlers; the server's state is read when a request comes."""

    def __init__(self, view: Callable[[], DecisionsView], snapshot: Callable[[], StatsSnapshot | None],
                 names: Callable[[], list[str]], history: ChartHistory, clips_dir: Callable[[], Path | None]) -> None:
        self.view, self.snapshot, self.names, self.history, self.clips_dir = view, snapshot, names, history, clips_dir

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/api/events", self.events)
        app.router.add_get("/api/timeline", self.timeline)

    async def events(self, request: web.Request) -> web.Response:
        q = parse_event_query(request.query)
        return web.json_response(events_document(self.view(), q, self.clips_dir()),
                                 headers={"Cache-Control": "no-store"})

    async def timeline(self, request: web.Request) -> web.Response:
        return web.json_response(timeline_document(self.view(), self.history, self.snapshot(), self.names()),
                                 headers={"Cache-Control": "no-store"})
