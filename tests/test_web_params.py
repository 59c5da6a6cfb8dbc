"""A stream request's parameters, any text at all: the stream or a one-line 4xx, never a 500 (hypothesis)."""

from __future__ import annotations

import http.client
import time
from urllib.parse import quote, quote_from_bytes

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.web.address import parse_serve
from stream.web.server import PreviewServer

NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers().map(str),
                    st.sampled_from(["", "1e309", "-0", "0x10", "1_0", " 15 ", "15.", ".5", "١٥", "NaN", "inf"]))
# What a URL can carry, percent-encoded: any text, or bytes that are not UTF-8 at all.
VALUES = st.one_of(NUMBERS.map(lambda t: quote(t, safe="")), st.text(max_size=40).map(lambda t: quote(t, safe="")),
                   st.binary(max_size=20).map(lambda b: quote_from_bytes(b, safe="")))
NAMES = st.one_of(st.just("a"), st.text(min_size=1, max_size=20).map(lambda t: quote(t, safe="")),
                  st.binary(min_size=1, max_size=10).map(lambda b: quote_from_bytes(b, safe="")))


def fetch(port: int, target: str) -> tuple[int, bytes]:
    """Status and body; a stream that starts is left at once (its 200 is the answer)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", target)
        response = conn.getresponse()
        return response.status, b"" if response.status == 200 else response.read()
    finally:
        conn.close()


def test_any_stream_parameters_get_the_stream_or_a_one_line_4xx():
    srv = PreviewServer(parse_serve("127.0.0.1:0"), ["a"])
    srv.start()

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(name=NAMES, fps=st.none() | VALUES, height=st.none() | VALUES, extra=st.none() | VALUES)
    def request(name, fps, height, extra):
        query = "&".join(f"{k}={v}" for k, v in (("fps", fps), ("height", height), ("fps", extra)) if v is not None)
        status, body = fetch(srv.port, f"/stream/{name}.mjpg" + (f"?{query}" if query else ""))
        assert status in (200, 400, 404), (status, body)
        assert status != 200 or name == "a"
        text = body.decode("utf-8", "replace")
        assert "Traceback" not in text and text.rstrip("\n").count("\n") == 0, text

    try:
        request()
        # Every stream that started was left: its viewer is gone once the server notices.
        deadline = time.monotonic() + 5
        while srv.frames["a"].viewers and time.monotonic() < deadline:
            time.sleep(0.05)
        assert srv.frames["a"].viewers == 0
    finally:
        srv.stop()
