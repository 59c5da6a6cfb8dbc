"""The REST API on `--serve`: streams listed, added and removed while the run goes on.

`GET /api/streams` (each stream's status), `GET /api/streams/{name}`, `POST /api/streams` (JSON: `uri`, optional
`name` and `target_fps`; 201 with the stream's status), `DELETE /api/streams/{name}` (200 once its outputs are
finalised, with their summaries), `GET /api/openapi.json` (this API, described by `openapi_document`).

The web layer imports no session: the run hands the server a `StreamControl`, whose calls block (opening a
source takes up to 10 s for a dead URL) and so run in threads of their own, never on the event loop nor
on the run's loop. Errors are one line in `{"error": ...}`: 400 a malformed request (an unsafe name too),
404 an unknown stream, 409 a name already taken, 415 a body that is not JSON, 422 a stream that cannot join
(its source does not open, its output clashes), 503 a run that takes no change now (its model loading, or
ended). A mutation is
refused (403) on an address other than loopback unless the server has a token: anyone who reached the port
could point the service at any URL or file. It must come as `Content-Type: application/json`, which no
cross-site HTML form can send.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import math
import threading
from collections.abc import Callable
from typing import Protocol

from aiohttp import web

from stream import redact
from stream.errors import Invalid, NameTaken, NoSuchStream, NotReady, UserError
from stream.observe.stats import StatsSnapshot
from stream.web.status import no_row, stream_status

MAX_BODY_BYTES = 16 * 1024
MAX_URI_CHARS = 2048
MAX_NAME_CHARS = 64  # stream.media.streams.NAME_PATTERN
MAX_FPS = 1000.0
API_WORKERS = 4  # adds and removals in progress at once; more wait their turn
FIELDS = {"uri", "name", "target_fps"}
MAX_SHOWN = 64

log = logging.getLogger(__name__)
log.addFilter(redact.ScrubFilter())


class StreamControl(Protocol):
    """What the run lends the server (stream.session.service.ServiceControl). Each call blocks; UserError
    subclasses say what went wrong (NameTaken, NoSuchStream, NotReady; any other: the stream cannot join)."""

    def streams(self) -> list[dict]: ...  # the streams in the run: name, uri (masked), target_fps, [state]

    def add(self, uri: str, name: str | None, target_fps: float | None) -> dict: ...  # the stream, as listed

    def remove(self, name: str) -> list[dict]: ...  # its outputs' summaries, once finalised


def mutations_allowed(bound_host: str, token: str | None) -> bool:
    """Changes need a token unless the server is reachable from this machine only."""
    if token is not None:
        return True
    if bound_host == "localhost":
        return True
    try:
        return ipaddress.ip_address(bound_host).is_loopback
    except ValueError:
        return False


def _error(cls: type[web.HTTPException], message: str, **headers: str) -> web.HTTPException:
    line = redact.scrub(" ".join(message.split()))  # one line, whatever the message held
    return cls(text=json.dumps({"error": line}), content_type="application/json", headers=headers or None)


def _shown(text: str) -> str:
    return repr(text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + "...")


def parse_new_stream(raw: bytes) -> tuple[str, str | None, float | None]:
    """A POST body: (uri, name or None, target_fps or None), or a 400 naming what is wrong."""
    try:
        body = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):  # not UTF-8, not JSON, nested too deep, an integer of 5000 digits
        raise _error(web.HTTPBadRequest, 'the body must be a JSON object such as {"uri": "rtsp://cam/s1"}') from None
    if not isinstance(body, dict):
        raise _error(web.HTTPBadRequest, 'the body must be a JSON object such as {"uri": "rtsp://cam/s1"}')
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise _error(web.HTTPBadRequest, f"unknown field(s) {', '.join(_shown(k) for k in unknown)}; "
                                         f"valid: {', '.join(sorted(FIELDS))}")
    uri, name, fps = body.get("uri"), body.get("name"), body.get("target_fps")
    if not isinstance(uri, str) or not uri.strip():
        raise _error(web.HTTPBadRequest, "uri: give the camera's URL, a device number or a file path (a string)")
    if len(uri) > MAX_URI_CHARS or any(ord(c) < 32 or ord(c) == 127 or 0xD800 <= ord(c) < 0xE000 for c in uri):
        raise _error(web.HTTPBadRequest, f"uri: at most {MAX_URI_CHARS} characters, no control characters")
    if name is not None and not isinstance(name, str):
        raise _error(web.HTTPBadRequest, "name: a string of 1 to 64 letters, digits, '_', '-' or '.'")
    if fps is not None and (isinstance(fps, bool) or not isinstance(fps, (int, float))
                            or not math.isfinite(fps) or not 0 < fps <= MAX_FPS):
        raise _error(web.HTTPBadRequest, f"target_fps: a number above 0, at most {MAX_FPS:g}")
    return uri, name, None if fps is None else float(fps)


class StreamsApi:
    """The routes' handlers. `snapshot` and `control` are read when a request comes: the server is listening
    before the model loads, and the run lends its control once its streams can change."""

    def __init__(self, snapshot: Callable[[], StatsSnapshot | None], names: Callable[[], list[str]],
                 bound_host: str, token: str | None) -> None:
        self.snapshot, self.names = snapshot, names
        self.control: StreamControl | None = None
        self.can_change = mutations_allowed(bound_host, token)
        self._busy = asyncio.Semaphore(API_WORKERS)
        self._closed = False

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/api/openapi.json", self.openapi)
        app.router.add_get("/api/streams", self.list)
        app.router.add_post("/api/streams", self.add)
        app.router.add_get("/api/streams/{name}", self.one)
        app.router.add_delete("/api/streams/{name}", self.remove)

    def close(self) -> None:
        self._closed = True

    # ---- reading

    def _rows(self) -> dict[str, dict]:
        snap = self.snapshot()
        return {} if snap is None else {row.name: stream_status(row) for row in snap.streams}

    def _statuses(self) -> list[dict]:
        rows = self._rows()
        if self.control is None:  # the model still loading, or a server without a run (a library's)
            return [{"uri": None, "target_fps": None, **rows.get(n, no_row(n))} for n in self.names()]
        out = []
        for about in self.control.streams():
            name = about["name"]
            state = about.get("state")
            row = no_row(name, state) if state else rows.get(name, no_row(name))
            row.update(self._tries(about))
            # Served widely without a token, streams appear by name only: a URI names hosts and paths.
            out.append({**row, "uri": about["uri"] if self.can_change else None, "target_fps": about["target_fps"]})
        return out

    def _tries(self, about: dict) -> dict:
        """A waiting camera's attempts and last error. The error names the camera's host, as its URI does: shown
        where the URI is."""
        keep = ("attempts", "error") if self.can_change else ("attempts",)
        return {k: about[k] for k in keep if k in about}

    def waiting(self) -> list[dict]:
        """The cameras waiting to join the run (stream.session.waiting): the page's tiles, /metrics' gauge."""
        if self.control is None:
            return []
        return [{"name": about["name"], **self._tries(about)} for about in self.control.streams()
                if about.get("state") == "waiting"]

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(openapi_document())

    async def list(self, request: web.Request) -> web.Response:
        return web.json_response({"streams": self._statuses()}, headers={"Cache-Control": "no-store"})

    async def one(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        for status in self._statuses():
            if status["name"] == name:
                return web.json_response(status, headers={"Cache-Control": "no-store"})
        raise _error(web.HTTPNotFound, f"no stream named {_shown(name)}")

    # ---- changing

    def _may_change(self, request: web.Request, body: bool) -> StreamControl:
        if not self.can_change:
            raise _error(web.HTTPForbidden, "streams can be changed over the network only with a token: start the "
                                            "server with --serve-token, or serve 127.0.0.1")
        if body and request.content_type != "application/json":
            raise _error(web.HTTPUnsupportedMediaType, "send the stream as JSON, with Content-Type: application/json")
        if self.control is None:
            raise _error(web.HTTPServiceUnavailable, "the run is not taking streams yet (its model is loading); "
                                                     "retry shortly", **{"Retry-After": "5"})
        return self.control

    async def _blocking(self, call, *args):
        """`call` in the API's threads; the run's one-line errors become HTTP answers."""
        if self._closed:
            raise _error(web.HTTPServiceUnavailable, "the run is ending")
        try:
            return await self._in_thread(call, *args)
        except Invalid as exc:
            raise _error(web.HTTPBadRequest, str(exc)) from None
        except NameTaken as exc:
            raise _error(web.HTTPConflict, str(exc)) from None
        except NoSuchStream as exc:
            raise _error(web.HTTPNotFound, str(exc)) from None
        except NotReady as exc:
            raise _error(web.HTTPServiceUnavailable, str(exc), **{"Retry-After": "5"}) from None
        except UserError as exc:
            raise _error(web.HTTPUnprocessableEntity, str(exc)) from None

    async def _in_thread(self, call, *args):
        """`call(*args)` in a daemon thread of its own, at most API_WORKERS at once. Not a pool: its threads are
        joined at the interpreter's exit, and a dead camera still opening (10 s) would hold the process past a
        supervisor's grace after the run has ended. A request whose client hangs up keeps its place until its call
        returns."""
        loop = asyncio.get_running_loop()
        await self._busy.acquire()
        done = loop.create_future()
        done.add_done_callback(lambda _: self._busy.release())

        def work() -> None:
            try:
                outcome = (True, call(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to the request
                outcome = (False, exc)
            try:
                loop.call_soon_threadsafe(_settle, done, outcome)
            except RuntimeError:  # the server's loop has closed: the run is over, nobody waits
                pass

        threading.Thread(target=work, name="web-api", daemon=True).start()
        ok, value = await asyncio.shield(done)
        if not ok:
            raise value
        return value

    async def add(self, request: web.Request) -> web.Response:
        control = self._may_change(request, body=True)
        uri, name, fps = parse_new_stream(await _body(request))
        added = await self._blocking(control.add, uri, name, fps)
        status = {**self._rows().get(added["name"], no_row(added["name"])), "uri": added["uri"],
                  "target_fps": added["target_fps"]}
        return web.json_response(status, status=201, headers={"Location": f"/api/streams/{added['name']}"})

    async def remove(self, request: web.Request) -> web.Response:
        control = self._may_change(request, body=False)
        name = request.match_info["name"]
        if len(name) > MAX_NAME_CHARS:
            raise _error(web.HTTPNotFound, f"no stream named {_shown(name)}")
        outputs = await self._blocking(control.remove, name)
        return web.json_response({"name": name, "outputs": outputs})


def _settle(done: asyncio.Future, outcome: tuple) -> None:
    if not done.done():
        done.set_result(outcome)


async def _body(request: web.Request) -> bytes:
    """The request's body, read no further than MAX_BODY_BYTES (413 beyond)."""
    chunks, size = [], 0
    if request.content_length is None or request.content_length <= MAX_BODY_BYTES:
        async for chunk in request.content.iter_chunked(8192):
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                break
            chunks.append(chunk)
    if size > MAX_BODY_BYTES or (request.content_length or 0) > MAX_BODY_BYTES:
        raise web.HTTPRequestEntityTooLarge(MAX_BODY_BYTES, max(size, request.content_length or 0),
                                            text=json.dumps({"error": f"the body may hold at most {MAX_BODY_BYTES} "
                                                                      "bytes"}), content_type="application/json")
    return b"".join(chunks)


# ---- the OpenAPI document

def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _text(description: str) -> dict:
    return {"description": description, "content": {"text/plain": {"schema": {"type": "string"}}}}


def _problem(description: str) -> dict:
    return _json(_ref("Error"), description)


GUARDED = {  # what the guard answers before any route (stream.web.guard), on every path but /healthz
    "401": _text("a token is required (the server was started with --serve-token)"),
    "403": _text("the Host or Origin is not a name this server answers to (DNS rebinding protection)"),
}
CHANGE_REFUSED = {
    "403": {"description": "the Host or Origin is refused (text/plain), or the server listens beyond loopback "
                           "without a token and takes no change (JSON)",
            "content": {"text/plain": {"schema": {"type": "string"}}, "application/json": {"schema": _ref("Error")}}},
    "503": _problem("the run takes no change now: its model is loading, or it has ended"),
}
NULLABLE_NUMBER = {"type": "number", "nullable": True}
NAME = {"type": "string", "pattern": r"^[A-Za-z0-9_.\-]{1,64}$", "not": {"enum": [".", ".."]}}


def openapi_document() -> dict:
    latency = {"type": "object", "nullable": True,
               "properties": {"p50": NULLABLE_NUMBER, "p95": NULLABLE_NUMBER, "p99": NULLABLE_NUMBER,
                              "count": {"type": "integer"}}}
    name_param = {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1},
                  "description": "the stream's name"}
    return {
        "openapi": "3.0.3",
        "info": {"title": "stream classifier service", "version": "1",
                 "description": "Cameras added and removed while the run goes on (`run_stream.py --serve ... "
                                "--keep-running`). With `--serve-token`, every request needs the token."},
        "security": [{"bearer": []}, {"query": []}, {}],
        "paths": {
            "/api/streams": {
                "get": {"summary": "every stream in the run, with its status", "operationId": "listStreams",
                        "responses": {"200": _json({"type": "object", "required": ["streams"],
                                                    "properties": {"streams": {"type": "array",
                                                                               "items": _ref("Stream")}}},
                                                   "the streams, in the order they joined"), **GUARDED}},
                "post": {
                    "summary": "add a stream: its source is opened first (up to 10 s for a dead URL)",
                    "operationId": "addStream",
                    "requestBody": {"required": True,
                                    "content": {"application/json": {"schema": _ref("NewStream")}}},
                    "responses": {
                        "201": {**_json(_ref("Stream"), "the stream joined the run"),
                                "headers": {"Location": {"schema": {"type": "string"}}}},
                        "400": _problem("the body is not a JSON object of valid fields (a bad uri, an unsafe name)"),
                        **GUARDED, **CHANGE_REFUSED,
                        "409": _problem("a stream of that name is in the run (or still leaving it)"),
                        "413": _problem(f"the body is over {MAX_BODY_BYTES} bytes"),
                        "415": _problem("the body is not sent as application/json"),
                        "422": _problem("the stream cannot join: its source does not open, or its output would "
                                        "replace an input or another output"),
                    }},
            },
            "/api/streams/{name}": {
                "parameters": [name_param],
                "get": {"summary": "one stream's status", "operationId": "getStream",
                        "responses": {"200": _json(_ref("Stream"), "the stream"),
                                      "404": _problem("no stream of that name"), **GUARDED}},
                "delete": {"summary": "remove a stream; answered once its outputs are finalised",
                           "operationId": "removeStream",
                           "responses": {"200": _json(_ref("Removed"), "the stream left the run"),
                                         "404": _problem("no stream of that name"), **GUARDED, **CHANGE_REFUSED}},
            },
            **decisions_paths(),
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                "query": {"type": "apiKey", "in": "query", "name": "token"}},
            "schemas": {
                "NewStream": {
                    "type": "object", "required": ["uri"], "additionalProperties": False,
                    "properties": {
                        "uri": {"type": "string", "minLength": 1, "maxLength": MAX_URI_CHARS,
                                "description": "rtsp://, http(s):// and other URLs, a device number, a video file "
                                               "or an image folder; credentials in it are never shown"},
                        "name": {**NAME, "description": "default: made from the URI (with -2, -3, ... when "
                                                        "that name is taken)"},
                        "target_fps": {"type": "number", "exclusiveMinimum": True, "minimum": 0,
                                       "maximum": MAX_FPS, "description": "default: the run's, else the source's"},
                    }},
                "Stream": {
                    "type": "object", "required": ["name", "uri", "state"],
                    "properties": {
                        "name": {"type": "string"},
                        "uri": {"type": "string", "nullable": True,
                                "description": "credentials masked; null on a server beyond loopback without a "
                                               "token, where streams appear by name only"},
                        "target_fps": NULLABLE_NUMBER,
                        "state": {"type": "string", "description": "starting, connecting, running, reconnecting, "
                                                                   "stalled, ended, failed, removing; waiting: "
                                                                   "did not answer at start, tried again in the "
                                                                   "background until it joins"},
                        "attempts": {"type": "integer", "description": "waiting: the attempts to open it so far"},
                        "error": {"type": "string",
                                  "description": "waiting: why the last attempt failed (where the uri is shown)"},
                        "fps": NULLABLE_NUMBER,
                        "frames": {"type": "object", "nullable": True,
                                   "properties": {k: {"type": "integer", "nullable": True}
                                                  for k in ("read", "processed", "shown", "dropped", "total")}},
                        "drops": {"type": "object", "additionalProperties": {"type": "integer"}},
                        "reconnects": {"type": "integer"},
                        "stalls": {"type": "integer"},
                        "last_frame_age_s": NULLABLE_NUMBER,
                        "latency_ms": {"type": "object", "properties": {"end_to_end": latency}},
                        "top": {"type": "array", "items": {"type": "object", "properties": {
                            "label": {"type": "string"}, "prob": NULLABLE_NUMBER}}},
                    }},
                "Removed": {
                    "type": "object", "required": ["name", "outputs"],
                    "properties": {"name": {"type": "string"},
                                   "outputs": {"type": "array", "items": {
                                       "type": "object", "required": ["kind"],
                                       "properties": {"kind": {"type": "string"}, "path": {"type": "string"},
                                                      "written": {"type": "integer"}},
                                       "description": "a finalised output: video or log (path, written), preview "
                                                      "(stream, encodes), window (title)"}}}},
                **decisions_schemas(),
                "Error": {"type": "object", "required": ["error"],
                          "properties": {"error": {"type": "string", "description": "one line: what to fix"}}},
            },
        },
    }


def decisions_paths() -> dict:
    """The decisions stage's routes (stream.web.decisions): read-only, its views of the run."""
    param = {"in": "query", "required": False}
    return {
        "/api/events": {"get": {
            "summary": "the newest rule events (newest last), their counts and each event output's delivery",
            "operationId": "listEvents",
            "parameters": [{**param, "name": "stream", "schema": {"type": "string", "maxLength": 128},
                            "description": "only this stream's events"},
                           {**param, "name": "rule", "schema": {"type": "string", "maxLength": 128},
                            "description": "only this rule's events"},
                           {**param, "name": "limit", "schema": {"type": "integer", "minimum": 1, "maximum": 100},
                            "description": "at most this many (default and most: 100, those the run keeps)"}],
            "responses": {"200": _json(_ref("Events"), "the events, counts and delivery"),
                          "400": _problem("an unknown, repeated or malformed parameter"), **GUARDED}}},
        "/api/timeline": {"get": {
            "summary": "per stream: its steady label, the last 120 s (stream time) of label segments, and the "
                       "last 10 minutes of fps and p95 end-to-end latency, one sample a second",
            "operationId": "getTimeline",
            "responses": {"200": _json(_ref("Timeline"), "every stream the page shows"), **GUARDED}}},
    }


def decisions_schemas() -> dict:
    string, number = {"type": "string"}, {"type": "number"}
    link = {"type": "string", "nullable": True, "description": "a URL under /clips/, relative to the page"}
    counts = {"type": "integer"}
    return {
        "Event": {"type": "object", "required": ["type", "rule", "stream", "label", "prob", "time_s", "frame",
                                                 "wall_time"],
                  "properties": {"type": {"type": "string", "enum": ["start", "end"]}, "rule": string,
                                 "stream": string, "label": string, "prob": number,
                                 "time_s": {**number, "description": "the stream's clock (media time for files)"},
                                 "frame": counts, "wall_time": {**string, "format": "date-time"},
                                 "snapshot": {**string, "nullable": True}, "clip": {**string, "nullable": True},
                                 "links": {"type": "object", "properties": {"snapshot": link, "clip": link}}}},
        "Events": {"type": "object", "required": ["events", "counts", "delivery"], "properties": {
            "events": {"type": "array", "items": _ref("Event")},
            "counts": {"type": "array", "items": {"type": "object", "properties": {
                "rule": string, "label": string, "type": string, "events": counts}}},
            "delivery": {"type": "array", "items": {"type": "object", "properties": {
                "output": string, "delivered": counts, "failed": counts, "dropped": counts, "pending": counts,
                "state": string}}}}},
        "Timeline": {"type": "object", "required": ["streams"], "properties": {"streams": {"type": "array", "items": {
            "type": "object", "required": ["name", "decisions", "history"], "properties": {
                "name": string,
                "decisions": {"type": "object", "nullable": True,
                              "description": "null before the stream's first decided frame, or without --rules",
                              "properties": {
                                  "now_s": number, "window_s": number,
                                  "steady": {"type": "object", "nullable": True, "properties": {
                                      "label": string, "prob": number, "since_s": number}},
                                  "segments": {"type": "array", "items": {"type": "object", "properties": {
                                      "label": string, "start_s": number, "end_s": number}}}}},
                "target_fps": NULLABLE_NUMBER, "budget_ms": NULLABLE_NUMBER,
                "history": {"type": "object", "properties": {
                    "t": {"type": "array", "items": number, "description": "seconds since the epoch"},
                    "fps": {"type": "array", "items": NULLABLE_NUMBER},
                    "p95_ms": {"type": "array", "items": NULLABLE_NUMBER}}}}}}}},
    }
