"""What the `--serve` server does against hostile or broken clients, before a request reaches a route.

- Host allow-list: a page elsewhere can point a name it controls at 127.0.0.1 (DNS rebinding) and then read
  this server as its own origin. Browsers always send the name they used in `Host` (and `Origin` on
  cross-origin requests), so a request naming anything but a loopback name, the bound address or a
  `--serve-allow-host` name is refused (403). Any IP literal is fine on a wildcard bind (0.0.0.0, ::):
  serving widely was the user's choice, and a literal cannot be rebound.
- The token: `Authorization: Bearer` (any case) or `?token=`, compared in constant time; whatever bytes a
  client sends compare as unequal, never as an error.
- Connections: at most MAX_CONNECTIONS at once, and one with no request in progress (an idle or half-sent
  one) is closed after IDLE_TIMEOUT_S. At the cap a new connection takes the place of the oldest idle one,
  so a flood of idle sockets cannot lock out a browser; only when every slot is in use is it refused (503).
- Bad requests (too many or too long headers, a garbled request line) are answered 400 by aiohttp, which
  logs each with a traceback that can quote the request line and its `?token=`: `request_log` makes that
  one DEBUG line naming the exception's type only (a bug of ours: one line at aiohttp's level, the
  traceback at DEBUG).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import sys
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from stream.redact import ScrubFilter

MAX_CONNECTIONS = 128
IDLE_TIMEOUT_S = 10.0  # from connect, or a request's end, until the next request's headers are in
BACKLOG = 128
# aiohttp's parser limits, written out: a request over them is a 400 before any route runs. Cookies for
# `localhost` are shared with every other local app, so a header line keeps the usual 8 KiB.
PARSER_LIMITS = {"max_line_size": 8190, "max_field_size": 8190, "max_headers": 64}
MAX_SHOWN = 64  # characters of a refused name echoed back
LOOPBACK_NAMES = frozenset({"localhost"})
WILDCARDS = frozenset({"", "0.0.0.0", "::"})
REFUSED_LINGER_S = 1.0  # a refused client's time to read its 503 and hang up
REFUSAL = b"too many connections to this server; retry later\n"
REFUSED = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nRetry-After: 10\r\n"
           b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(REFUSAL), REFUSAL))

log = logging.getLogger(__name__)
log.addFilter(ScrubFilter())


# ---- Host and Origin

def host_name(value: str) -> str:
    """`Name:8080` → `name`, `[::1]:80` → `::1`: the name a client used, lower case, without port or final dot."""
    value = value.strip().lower()
    if value.startswith("["):
        value = value[1:].partition("]")[0]
    elif value.count(":") == 1:
        value = value.partition(":")[0]
    return value.rstrip(".")


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


class HostPolicy:
    def __init__(self, bound: str, allow: str | None = None) -> None:
        extra = {host_name(n) for n in (allow or "").split(",") if n.strip()}
        self.names = LOOPBACK_NAMES | extra | {host_name(bound)}
        self.any_ip = bound in WILDCARDS

    def allows(self, name: str) -> bool:
        if name in self.names or name.endswith(".localhost"):
            return True
        ip = _ip(name)
        return ip is not None and (ip.is_loopback or self.any_ip)

    def refusal(self, request: web.Request) -> str | None:
        """Why the request is refused, as the one line its answer carries; None when it is allowed."""
        for value in request.headers.getall("Host", []):
            name = host_name(value)
            if not self.allows(name):
                return _refused("Host", name)
        origin = request.headers.get("Origin")
        if origin is not None:
            name = _origin_name(origin)
            if name is None or not self.allows(name):
                return _refused("Origin", name or origin)
        return None


def _origin_name(origin: str) -> str | None:
    try:
        parts = urlsplit(origin.strip())
        return host_name(parts.hostname or "") or None
    except ValueError:  # "null" (a sandboxed or file: page) has no host either
        return None


def _refused(header: str, name: str) -> str:
    shown = name if len(name) <= MAX_SHOWN else name[:MAX_SHOWN] + "..."
    return (f"{header} {shown!r} is not a name this server answers to (DNS rebinding protection); "
            f"if you reach it by that name, start it with --serve-allow-host {shown}\n")


def host_middleware(policy: HostPolicy):
    # /healthz too: a probe names the address it dials (an IP literal, or localhost), which is allowed.
    @web.middleware
    async def check_host(request: web.Request, handler):
        refusal = policy.refusal(request)
        if refusal is not None:
            log.debug("refused %s %s: %s", request.method, request.path, refusal.split(";")[0])
            raise web.HTTPForbidden(text=refusal)
        return await handler(request)

    return check_host


# ---- The token

def given_token(request: web.Request) -> str:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer":  # RFC 7235: the scheme is case-insensitive
        return value.strip()
    return request.query.get("token", "")


def same_secret(given: str, token: str) -> bool:
    # Headers are decoded with surrogateescape: bytes that are not UTF-8 must compare unequal, not raise.
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), token.encode("utf-8", "surrogatepass"))


def token_middleware(token: str):
    @web.middleware
    async def check_token(request: web.Request, handler):
        if request.path != "/healthz" and not same_secret(given_token(request), token):
            raise web.HTTPUnauthorized(text="a token is required: Authorization: Bearer <token>, or ?token=\n",
                                       headers={"WWW-Authenticate": "Bearer"})
        return await handler(request)

    return check_token


# ---- Connections

class ConnectionGuard:
    """Counts the server's connections and closes the idle ones; `factory` wraps aiohttp's protocol factory."""

    def __init__(self) -> None:
        # Oldest first, each from the moment it is accepted: the loop accepts a burst of connections before
        # any of them is told it is made, and the cap has to hold within a burst too.
        self._open: dict[_Guarded, None] = {}

    @property
    def count(self) -> int:
        return len(self._open)

    def factory(self, make):
        def protocol() -> asyncio.Protocol:
            if len(self._open) >= MAX_CONNECTIONS and not self._evict_idle():
                return _Refused()
            return _Guarded(self, make())

        return protocol

    @web.middleware
    async def middleware(self, request: web.Request, handler):
        conn = request.transport.get_protocol() if request.transport is not None else None
        if not isinstance(conn, _Guarded):
            return await handler(request)
        conn.begin()
        try:
            return await handler(request)
        finally:
            conn.end()

    def _evict_idle(self) -> bool:
        oldest = next((c for c in self._open if not c.busy), None)
        if oldest is None:
            return False
        log.debug("connection limit (%d) reached: closing the oldest idle connection", MAX_CONNECTIONS)
        oldest.close()
        return True

    def _accepted(self, conn: _Guarded) -> None:
        self._open[conn] = None

    def _forget(self, conn: _Guarded) -> None:
        self._open.pop(conn, None)


class _Guarded(asyncio.Protocol):
    """One connection: aiohttp's protocol behind it, on the idle clock whenever no request is in progress."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self.guard, self.inner = guard, inner
        self.busy = 0  # requests in progress (a pipelining client can have more than one)
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._evicted = False
        guard._accepted(self)

    def connection_made(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self.inner.connection_made(transport)
        if self._evicted:  # evicted between its accept and now
            transport.abort()
        else:
            self._arm()

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.guard._forget(self)
        self.inner.connection_lost(exc)

    def begin(self) -> None:
        self.busy += 1
        self._disarm()

    def end(self) -> None:
        self.busy -= 1
        if not self.busy:
            self._arm()

    def close(self) -> None:
        """Now, unsent bytes dropped: an idle client that does not read must not keep its socket either."""
        self._evicted = True
        self._disarm()
        self.guard._forget(self)
        if self._transport is not None:
            self._transport.abort()

    def _arm(self) -> None:
        self._disarm()
        if self._transport is not None and not self._transport.is_closing():  # a request can end after its client
            self._timer = asyncio.get_running_loop().call_later(IDLE_TIMEOUT_S, self._expire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        if not self.busy:
            self.close()


class _Refused(asyncio.Protocol):
    """Told 503 and let go. What it sent is read and dropped meanwhile: closing on unread bytes sends a reset,
    which can reach the client before the answer and lose it."""

    def connection_made(self, transport: asyncio.Transport) -> None:
        log.debug("connection limit (%d) reached, every connection busy: refused one", MAX_CONNECTIONS)
        transport.write(REFUSED)
        if transport.can_write_eof():
            transport.write_eof()
        asyncio.get_running_loop().call_later(REFUSED_LINGER_S, transport.abort)

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        return False  # the client is done too: close


class GuardedSite(web.BaseSite):
    """web.TCPSite with the guard between the listening socket and aiohttp (TCPSite offers no such hook)."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, guard: ConnectionGuard) -> None:
        super().__init__(runner, backlog=BACKLOG)
        self._host, self._port, self._guard = host, port, guard

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        self._server = await asyncio.get_running_loop().create_server(
            self._guard.factory(self._runner.server), self._host, self._port, backlog=self._backlog)


# ---- aiohttp's request log

class _OneLine(logging.LoggerAdapter):
    def log(self, level, msg, *args, exc_info=None, **kwargs) -> None:
        exc = sys.exc_info()[1] if exc_info is True else exc_info
        if not isinstance(exc, BaseException):
            self.logger.log(level, msg, *args, **kwargs)
        elif isinstance(exc, HttpProcessingError) and exc.code < 500:
            # A client's mistake, common from scanners on an open port: no traceback, and its type only (its
            # message can quote the request line, a ?token= with it).
            self.logger.debug(f"{msg}: %d %s", *args, exc.code, type(exc).__name__)
        else:
            # A bug of ours: one line at the level aiohttp asked for, the traceback only at DEBUG.
            self.logger.log(level, f"{msg} (%s)", *args, type(exc).__name__)
            self.logger.debug("the traceback", exc_info=exc)


def request_log() -> logging.LoggerAdapter:
    """The `logger` of aiohttp's request handler (it is `aiohttp.server` otherwise)."""
    logger = logging.getLogger("stream.web.requests")
    if not any(isinstance(f, ScrubFilter) for f in logger.filters):
        logger.addFilter(ScrubFilter())
    return _OneLine(logger, {})
