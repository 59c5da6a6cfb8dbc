"""Credentials kept out of everything the tool shows or stores (Frigate masks camera passwords the same way).

`mask_uri` is for the places that show a URI: the report, the predictions log, the dashboard, the page,
`/metrics`. `scrub` is the last line of defence for free text (error lines, log records): every secret seen
so far (a URI's password, a secret query value, the --serve-token) is replaced wherever it appears.
"""

from __future__ import annotations

import logging
import re
import threading
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"
# Query keys whose values are secrets in camera and streaming URLs (Hikvision/Dahua/go2rtc/Wowza spellings).
SECRET_KEYS = re.compile(r"^(pass(word|wd)?|pwd|token|access_token|auth|authorization|key|api_?key|secret|"
                         r"sig(nature)?|credentials?)$", re.IGNORECASE)
# Some cameras take credentials in the path (`/user=admin&password=pw&channel=1`, Dahua/XM style).
PATH_SECRET = re.compile(r"(?i)(?<![A-Za-z0-9_])(pass(?:word|wd)?|pwd|token|access_token|auth|key|api_?key|secret)"
                         r"=([^&/;?#]*)")
MIN_SECRET_LEN = 3  # shorter "secrets" would mask ordinary text ("a", "pw") everywhere

_lock = threading.Lock()
_secrets: set[str] = set()


def remember(secret: str | None) -> None:
    """A secret that `scrub` removes from any text from now on."""
    if secret and len(secret) >= MIN_SECRET_LEN:
        with _lock:
            _secrets.add(secret)


def secrets_in(uri: str) -> list[str]:
    """The URI's password and secret query values (not the user name: "admin" is too common a word to mask)."""
    if "://" not in uri:
        return []
    try:
        parts = urlsplit(uri)
        found = [parts.password] if parts.password else []
        found += [v for k, v in parse_qsl(parts.query, keep_blank_values=True) if SECRET_KEYS.match(k) and v]
        found += [m.group(2) for m in PATH_SECRET.finditer(parts.path) if m.group(2)]
    except ValueError:  # a malformed port or bracket: mask_uri still hides the userinfo textually
        return [info.split(":", 1)[1] for info in re.findall(r"://([^/@]*)@", uri) if ":" in info]
    return found


def mask_uri(uri: str) -> str:
    """`rtsp://admin:pw@cam/s1?token=x` → `rtsp://***:***@cam/s1?token=***`; other text unchanged."""
    if "://" not in uri:
        return uri
    for secret in secrets_in(uri):
        remember(secret)
    try:
        parts = urlsplit(uri)
    except ValueError:
        return re.sub(r"://[^/@]*@", f"://{MASK}@", uri)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        netloc = (f"{MASK}:{MASK}" if ":" in userinfo else MASK) + "@" + host
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(SECRET_KEYS.match(k) for k, _ in pairs):
            query = urlencode([(k, MASK if SECRET_KEYS.match(k) else v) for k, v in pairs], safe="*")
    path = PATH_SECRET.sub(lambda m: f"{m.group(1)}={MASK}", parts.path)
    return urlunsplit((parts.scheme, netloc, path, query, parts.fragment))


def scrub(text: str) -> str:
    """`text` with every remembered secret masked (longest first, so a secret's own prefix cannot leak it)."""
    with _lock:
        known = sorted(_secrets, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def scrub_tree(value):
    """A JSON-like value (the report) with `scrub` applied to every string in it, keys included."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {scrub_tree(k): scrub_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub_tree(v) for v in value]
    return value


def install_log_filter() -> None:
    """Scrub every record the root logger's handlers (and logging's last-resort handler) emit."""
    for handler in [*logging.getLogger().handlers, logging.lastResort]:
        if handler is not None and not any(isinstance(f, ScrubFilter) for f in handler.filters):
            handler.addFilter(ScrubFilter())


class ScrubFilter(logging.Filter):
    """Masks remembered secrets in every log record that passes a handler (third-party loggers included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record is logging's business, not a reason to drop it
            return True
        cleaned = scrub(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True
