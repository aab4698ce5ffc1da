"""The address a runner reports for other runners to reach it at (multi-node runs)."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit


def route_source(server_url: str) -> str | None:
    """This machine's source address of the route to the server (the interface the other
    runners most likely share with it); None when it cannot be told (no route, a name that
    does not resolve). Sends nothing: connecting a UDP socket only picks the route."""
    parts = urlsplit(server_url)
    host = parts.hostname
    if not host:
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        for family, kind, proto, _, target in infos:
            with socket.socket(family, kind, proto) as sock:
                sock.connect(target)
                address = sock.getsockname()[0]
                if isinstance(address, str) and address:
                    return address.split("%", 1)[0]
    except OSError:
        return None
    return None
