"""The HTTP server behind `--serve`: aiohttp on its own asyncio loop in a thread.

Routes: `/` (the page), `/stream/{name}.mjpg?fps=&height=` (multipart/x-mixed-replace JPEGs),
`/api/status` (JSON), `/metrics` (Prometheus text), `/healthz`, the decisions stage's `/api/events` and
`/api/timeline` (stream.web.decisions), the --clips folder's files and the page's chart library
(`/clips/...`, `/static/...`: stream.web.files), and the REST API of a service whose streams
come and go (`/api/streams`, `/api/openapi.json`: stream.web.api). The render loop hands over the stats
snapshot it makes for the dashboard (`update`) and each stream's annotated frame (its LatestFrame sink);
requests only read those. A viewer that reads slowly gets fewer frames; one that stops reading is cut
off after WRITE_TIMEOUT_S, holding at most one frame in this process meanwhile.

Against hostile clients (stream.web.guard): a Host and Origin allow-list (DNS rebinding; `--serve-allow-host`
adds names), the token (`--serve-token`), at most guard.MAX_CONNECTIONS connections with idle and half-sent
ones closed after guard.IDLE_TIMEOUT_S, aiohttp's header limits (guard.PARSER_LIMITS), and a bad request
logged as one line without its traceback or token. Sizes and rates snap to a few steps (preview.HEIGHTS,
feed.snap_fps), so a URL's numbers cannot multiply encodings or feeds. `HEAD` of a stream answers its
headers and encodes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import choose_encoder

from stream import redact
from stream.decisions.hub import DecisionsView
from stream.errors import UserError
from stream.observe.stats import StatsSnapshot
from stream.web import guard
from stream.web.address import ServeAddress
from stream.web.api import StreamControl, StreamsApi
from stream.web.decision_metrics import DecisionsCollector
from stream.web.decisions import DecisionsRoutes
from stream.web.feed import Feed, snap_fps
from stream.web.files import FileRoutes
from stream.web.history import ChartHistory
from stream.web.metrics import SnapshotCollector
from stream.web.preview import LatestFrame, snap_height
from stream.web.status import status_document

STOP_TIMEOUT_S = 1.5  # the bound is 2 s for the whole stop
FEEDS_END_S = 0.2  # within it: cleanup waits at most STOP_TIMEOUT_S / 2 for the handlers
WRITE_TIMEOUT_S = 10.0
# A viewer's kernel send buffer: left to autotuning, a viewer that never reads would park megabytes there
# before its writes block and WRITE_TIMEOUT_S can notice.
SEND_BUFFER_BYTES = 512 * 1024
DEFAULT_FPS, MAX_FPS = 15.0, 60.0
MAX_HEIGHT = 4320
MAX_SHOWN = 32  # characters of a bad parameter echoed back
PAGE = Path(__file__).with_name("index.html")
BOUNDARY = "frame"
MJPEG_HEADERS = {"Content-Type": f"multipart/x-mixed-replace; boundary={BOUNDARY}", "Cache-Control": "no-store"}

log = logging.getLogger(__name__)


class PreviewServer:
    def __init__(self, address: ServeAddress, names: list[str], token: str | None = None,
                 allow_hosts: str | None = None, clips_dir: str | Path | None = None) -> None:
        """`allow_hosts`: comma-separated names a request's Host may give besides loopback and the bound address;
        `clips_dir`: the run's --clips folder, whose files `/clips/` serves (and none outside it)."""
        self.address = address
        self.token = token
        redact.remember(token)
        self.hosts = guard.HostPolicy(address.host, allow_hosts)
        self.connections = guard.ConnectionGuard()
        self.frames = {name: LatestFrame(name) for name in names}
        self.snapshot: StatsSnapshot | None = None  # replaced whole by the render loop: never mutated
        self.decisions = DecisionsView()  # likewise
        self.port: int | None = None
        self.api = StreamsApi(lambda: self.snapshot, lambda: list(self.frames), address.host, token)
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(SnapshotCollector(lambda: self.snapshot, lambda: self.frames, self._waiting))
        self.registry.register(DecisionsCollector(lambda: self.decisions))
        self.clips_dir = clips_dir
        self.history = ChartHistory()
        ProcessCollector(registry=self.registry)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="preview-jpeg")
        self._stopped = False
        self._feeds: dict[tuple[str, int | None, float], Feed] = {}  # (stream, height, fps): the event loop's own
        self.decision_routes = DecisionsRoutes(lambda: self.decisions, lambda: self.snapshot, lambda: list(self.frames),
                                               self.history, lambda: self._clips)
        self.file_routes = FileRoutes(lambda: self._clips)

    @property
    def url(self) -> str:
        host = f"[{self.address.host}]" if ":" in self.address.host else self.address.host
        return f"http://{host}:{self.port}/"

    @property
    def clips_dir(self) -> Path | None:
        return self._clips

    @clips_dir.setter
    def clips_dir(self, folder: str | Path | None) -> None:
        """Resolved once: /clips/ compares each request's resolved path with it."""
        self._clips = None if folder is None else Path(folder).resolve()

    # The render loop's side (the pipeline's Ui protocol, beside the dashboard).
    def update(self, snap: StatsSnapshot) -> None:
        self.snapshot = snap
        self.history.sample(snap)

    def update_decisions(self, view: DecisionsView) -> None:
        """The steady labels, segments and events, as of the run loop's latest look (an immutable view)."""
        self.decisions = view

    def add_stream(self, name: str) -> LatestFrame:
        """The preview sink of a stream (one that joins a run in progress gets its own); its page link follows."""
        frame = self.frames.get(name)
        if frame is None:
            # Replaced whole, never resized in place: the server thread iterates the mapping it read.
            frame = LatestFrame(name)
            self.frames = {**self.frames, name: frame}
        return frame

    def forget_stream(self, name: str) -> None:
        """A stream removed from the run: its viewers' responses end, its page tile and link go (a stream that
        only ended keeps its last frame on show)."""
        frame = self.frames.get(name)
        if frame is not None:
            frame.retire()
            self.frames = {n: f for n, f in self.frames.items() if n != name}

    @property
    def control(self) -> StreamControl | None:
        return self.api.control

    @control.setter
    def control(self, control: StreamControl | None) -> None:
        """The run's streams, lent once they can change (`/api/streams` answers 503 to changes until then)."""
        self.api.control = control

    def _waiting(self) -> list[str]:
        return [row["name"] for row in self.api.waiting()]

    def start(self) -> None:
        """Listening when this returns; a one-line error if the address cannot be bound."""
        started = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._serve, args=(started, failure), name="web", daemon=True)
        self._thread.start()
        started.wait()
        if failure:
            self._thread.join()
            self._pool.shutdown(wait=False)
            self.api.close()
            exc = failure[0]
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise UserError(f"--serve {self.address.host}:{self.address.port}: cannot listen ({reason}); "
                            "choose another port") from None

    def stop(self) -> None:
        """Close every connection and end the thread, within STOP_TIMEOUT_S plus a little; idempotent."""
        if self._stopped or self._loop is None:
            return
        self._stopped = True
        future = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        try:
            future.result(STOP_TIMEOUT_S + 0.4)
        except Exception as exc:  # noqa: BLE001 - a stuck connection must not keep the run from ending
            log.debug("web server shutdown: %r", exc)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(0.3)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.api.close()

    # The server thread.
    def _serve(self, started: threading.Event, failure: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._open())
        except Exception as exc:  # noqa: BLE001 - handed to start(), which makes it one line
            failure.append(exc)
            if self._runner is not None:
                loop.run_until_complete(self._runner.cleanup())
            loop.close()
            started.set()
            return
        self._loop = loop
        started.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _open(self) -> None:
        self._stopping = asyncio.Event()
        # The connection guard outermost: every request, refused ones too, stops its connection's idle clock.
        middlewares = [self.connections.middleware, guard.host_middleware(self.hosts)]
        if self.token is not None:
            middlewares.append(guard.token_middleware(self.token))
        app = web.Application(middlewares=middlewares)
        app.router.add_get("/", self._page)
        # aiohttp answers HEAD with the GET handler: for a stream that would encode and send frames.
        app.router.add_get("/stream/{name}.mjpg", self._mjpeg, allow_head=False)
        app.router.add_head("/stream/{name}.mjpg", self._mjpeg_head)
        app.router.add_get("/api/status", self._status)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._health)
        self.api.routes(app)
        self.decision_routes.routes(app)
        self.file_routes.routes(app)
        app.on_shutdown.append(self._on_shutdown)
        # handler_cancellation: a viewer that hangs up while its stream has no new frame (the model still
        # loading, a stalled camera) is let go then, not at the next frame.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=STOP_TIMEOUT_S / 2,
                                     handler_cancellation=True, logger=guard.request_log(),
                                     keepalive_timeout=guard.IDLE_TIMEOUT_S, **guard.PARSER_LIMITS)
        await self._runner.setup()
        site = guard.GuardedSite(self._runner, self.address.host, self.address.port, self.connections)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _shutdown(self) -> None:
        await self._runner.cleanup()
        # Feeds end on the stopping event that cleanup set: give them their last turn here, or the loop stops under
        # them and each is "destroyed but pending" at exit (seen once at the end of a CI run).
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if others:
            await asyncio.wait(others, timeout=FEEDS_END_S)

    async def _on_shutdown(self, app: web.Application) -> None:
        self._stopping.set()

    async def _page(self, request: web.Request) -> web.Response:
        return web.Response(text=PAGE.read_text(encoding="utf-8"), content_type="text/html",
                            headers={"Cache-Control": "no-store"})

    async def _status(self, request: web.Request) -> web.Response:
        document = status_document(self.snapshot, list(self.frames))
        document["waiting"] = self.api.waiting()
        return web.json_response(document, headers={"Cache-Control": "no-store"})

    async def _metrics(self, request: web.Request) -> web.Response:
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encode(self.registry), headers={"Content-Type": content_type})

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "running": self.snapshot is not None})

    def _preview(self, request: web.Request) -> tuple[LatestFrame, int | None, float]:
        """The stream, height and rate a request asks for, snapped to the steps feeds are shared at; 404, 400."""
        frame = self.frames.get(request.match_info["name"])
        if frame is None:
            raise web.HTTPNotFound(text=f"no stream named {_shown(request.match_info['name'])}; "
                                        f"streams: {', '.join(self.frames)}\n")
        fps = _number(request, "fps", DEFAULT_FPS, 0.1, MAX_FPS)
        height = _number(request, "height", None, 16, MAX_HEIGHT)
        return frame, snap_height(None if height is None else int(height)), snap_fps(fps)

    async def _mjpeg_head(self, request: web.Request) -> web.Response:
        self._preview(request)
        return web.Response(headers=MJPEG_HEADERS)

    async def _mjpeg(self, request: web.Request) -> web.StreamResponse:
        frame, height, fps = self._preview(request)
        response = web.StreamResponse(headers=MJPEG_HEADERS)
        sock = request.transport.get_extra_info("socket") if request.transport else None
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        await response.prepare(request)
        key = (frame.name, height, fps)
        feed = self._feeds.get(key)
        if feed is None or feed.frame is not frame:  # a stream of that name was removed and another joined
            feed = self._feeds[key] = Feed(frame, height, 1 / fps, self._pool, self._stopping)
        frame.watch()
        feed.join()
        try:
            await self._send_frames(request, response, feed)
        finally:
            feed.leave()
            frame.unwatch()
            if not feed.viewers and self._feeds.get(key) is feed:
                del self._feeds[key]
        return response

    async def _send_frames(self, request: web.Request, response: web.StreamResponse, feed: Feed) -> None:
        while (encoded := await feed.next()) is not None:
            part = (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(encoded.jpeg)}\r\n\r\n"
                    .encode() + encoded.jpeg + b"\r\n")
            try:
                await asyncio.wait_for(response.write(part), WRITE_TIMEOUT_S)
            except TimeoutError:  # the viewer stopped reading: drop it and what it left unread
                if request.transport is not None:
                    request.transport.abort()
                return
            except ConnectionError:
                return


class ServedUi:
    """The run's dashboard and the server side by side: the server stops when the pipeline finishes."""

    def __init__(self, ui, server: PreviewServer) -> None:
        self.ui, self.server = ui, server

    def update(self, snap: StatsSnapshot) -> None:
        self.server.update(snap)
        self.ui.update(snap)

    def close(self) -> None:
        try:
            self.server.stop()
        finally:
            self.ui.close()


def _number(request: web.Request, key: str, default: float | None, low: float, high: float) -> float | None:
    text = request.query.get(key)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not low <= value <= high:
        raise web.HTTPBadRequest(text=f"{key}={_shown(text)}: use a number from {low:g} to {high:g}\n")
    return value


def _shown(text: str) -> str:
    """A client's text quoted on one line, and short."""
    return repr(text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + "...")
