"""`--webhook URL` (repeatable): each event's JSON record POSTed to the URL by one worker thread per webhook.

The render thread only puts the event on a bounded queue (full: the event is counted as dropped). The worker
POSTs with a timeout and retries connection errors, timeouts, 5xx and 429 with exponential backoff and jitter;
any other answer outside 2xx (a 4xx, a redirect) is final and counted as failed. `close` gives what is queued a
bounded grace, then counts what is left as pending and returns, whatever the server does.
"""

from __future__ import annotations

import base64
import http.client
import json
import queue
import random
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

from stream.decisions.records import Delivery, Event
from stream.errors import UserError
from stream.frames import Steady
from stream.redact import mask_uri, remember

QUEUE_EVENTS = 1000  # events waiting for the worker; beyond it they are dropped, counted
TIMEOUT_S = 5.0  # per request: connecting, and each wait for the answer
BACKOFF_S = (0.5, 1.0, 2.0)  # waits before each retry (× a jitter of 0.75–1.25): three retries
CLOSE_GRACE_S = 3.0  # how long the run's end waits for the queue to drain
USAGE = "use http://host[:port]/path or https://..."


@dataclass(frozen=True)
class WebhookTarget:
    url: str  # without userinfo: that goes in the Authorization header
    authorization: str | None
    shown: str  # the URL with its credentials masked


def parse_webhook_url(url: str) -> WebhookTarget:
    """The URL to POST to, or a one-line UserError (the URL shown masked)."""
    shown = mask_uri(url)  # also remembers its password and secret query values, so they are never printed
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is no number
    except ValueError as exc:
        raise UserError(f"--webhook {shown}: {exc}; {USAGE}") from None
    if parts.scheme not in ("http", "https"):
        raise UserError(f"--webhook {shown}: not an http(s) URL; {USAGE}")
    if not parts.hostname:
        raise UserError(f"--webhook {shown}: no host; {USAGE}")
    authorization = None
    if parts.username is not None:
        user, password = unquote(parts.username), unquote(parts.password or "")
        remember(password)
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        remember(token)
        authorization = f"Basic {token}"
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return WebhookTarget(urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, "")), authorization,
                         shown)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer, not a new target: following it would turn the POST into a GET elsewhere."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class Retry(Exception):
    """An attempt that may succeed later: no connection, a timeout, 5xx or 429."""


class WebhookOutput:
    """An EventOutput (stream.decisions.records) POSTing to one URL."""

    def __init__(self, url: str) -> None:
        self.target = parse_webhook_url(url)
        self.name = f"webhook:{self.target.shown}"
        self._opener = urllib.request.build_opener(_NoRedirect)
        self._queue: queue.Queue[Event] = queue.Queue(QUEUE_EVENTS)
        self._lock = threading.Lock()
        self._stop = threading.Event()  # set when close's grace is over: no new attempt, no wait
        self.closing = False
        self.delivered = self.failed = self.dropped = 0
        self.in_flight = 0
        self.state = "ok"
        self.final: Delivery | None = None  # the counts as close left them
        self._worker = threading.Thread(target=self._run, name="webhook", daemon=True)
        self._worker.start()

    def publish(self, event: Event) -> None:
        try:
            if self.closing:
                raise queue.Full
            self._queue.put_nowait(event)
        except queue.Full:
            with self._lock:
                self.dropped += 1

    def steady(self, stream: str, steady: Steady) -> None:
        pass

    def stream_gone(self, stream: str) -> None:
        pass

    def delivery(self) -> Delivery:
        with self._lock:
            if self.final is not None:
                return self.final
            return Delivery(self.name, self.delivered, self.failed, self.dropped,
                            self._queue.qsize() + self.in_flight, self.state)

    def close(self) -> None:
        """What is queued gets CLOSE_GRACE_S to go out; what is left then is counted as pending."""
        if self.closing:
            return
        self.closing = True
        self._worker.join(CLOSE_GRACE_S)
        with self._lock:
            self.final = Delivery(self.name, self.delivered, self.failed, self.dropped,
                                  self._queue.qsize() + self.in_flight, self.state)
        self._stop.set()  # a request under way ends within its timeout; the thread is a daemon

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                event = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self.closing:
                    return
                continue
            with self._lock:
                self.in_flight = 1
            ok = self._deliver(json.dumps(event.record()).encode())
            with self._lock:
                self.in_flight = 0
                if self.final is not None:
                    return
                self.delivered += ok
                self.failed += not ok
                self.state = "ok" if ok else "failing"

    def _deliver(self, body: bytes) -> bool:
        """True once the server accepted it; False when it refused it or every retry failed (or the run ended)."""
        for wait in (*BACKOFF_S, None):
            try:
                return self._post(body)
            except Retry:
                if wait is None or self._stop.wait(wait * random.uniform(0.75, 1.25)):
                    return False
        return False

    def _post(self, body: bytes) -> bool:
        headers = {"Content-Type": "application/json", "User-Agent": "stream-classifier"}
        if self.target.authorization:
            headers["Authorization"] = self.target.authorization
        request = urllib.request.Request(self.target.url, body, headers, method="POST")
        try:
            with self._opener.open(request, timeout=TIMEOUT_S) as answer:
                answer.read()
                return 200 <= answer.status < 300
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code >= 500 or exc.code == 429:
                raise Retry from None
            return False
        except (OSError, http.client.HTTPException) as exc:  # URLError, refused, reset, timed out, garbled
            raise Retry from exc
        except ValueError:  # a URL the parser let through but urllib cannot use: retrying cannot help
            return False
