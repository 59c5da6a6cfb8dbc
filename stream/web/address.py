"""`--serve [HOST:]PORT`: parsed and judged (loopback or not) without opening anything."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from stream.errors import UserError

DEFAULT_HOST = "127.0.0.1"


@dataclass(frozen=True)
class ServeAddress:
    host: str
    port: int  # 0: any free port, printed when the server is up

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:  # a host name: it may resolve to anything
            return False


def parse_serve(text: str) -> ServeAddress:
    """`8080`, `127.0.0.1:8080`, `0.0.0.0:8080`, `[::1]:8080`, `localhost:0`."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host = DEFAULT_HOST
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535 or (sep and not host):
        raise UserError(f"bad value for serve: {text!r}; use [HOST:]PORT, e.g. 8080 or 127.0.0.1:8080")
    return ServeAddress(host, int(port))


def exposure_warning(address: ServeAddress, token: str | None) -> str | None:
    """What to tell a user who serves beyond this machine; None on loopback."""
    if address.loopback:
        return None
    where = f"--serve {address.host}:{address.port} listens beyond this machine"
    if token is None:
        return (f"warning: {where} and the preview has no authentication: anyone who reaches the port sees every "
                "stream; add --serve-token, or serve on 127.0.0.1")
    return f"warning: {where}; requests need the token, which travels unencrypted over plain HTTP"
