"""What the tunnel's three parties say to each other (see docs/api.md, "App tunnels").

Binary frames carry the TCP bytes; an empty binary frame is the sender's end of stream (a TCP
half-close), so protocols that shut down one direction keep working. Text frames are JSON
control messages: on the control connection (`OpenRequest` from the server, `Refusal` from
the runner) and, on a client connection, one `Notice` the server sends before it closes the
connection abnormally (a close frame's reason is limited to 123 bytes; a notice is not).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

CHUNK = 64 * 1024
"""Bytes read from a TCP socket at a time, and so the largest binary frame sent."""
EOF = b""
"""The binary frame that ends one direction of a connection."""

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_ERROR = 1011
"""A close with this code carries a reason for the user (after a `Notice` where possible)."""


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OpenRequest(_Message):
    """Server → runner: dial 127.0.0.1:`port` for job `job_id` and open data connection
    `conn_id` (`/api/runners/{runner_id}/tunnel/{conn_id}`) to carry its bytes."""

    type: Literal["open"] = "open"
    conn_id: str
    job_id: str
    port: int


class Refusal(_Message):
    """Runner → server: connection `conn_id` cannot be opened, and why (shown to the user)."""

    type: Literal["refused"] = "refused"
    conn_id: str
    message: str


class Notice(_Message):
    """Server → client: why the connection ends, in one line for the user."""

    type: Literal["error"] = "error"
    message: str


def websocket_url(base_url: str, path: str) -> str:
    """`http://host:port` (or https) + `path` → the `ws://` (or `wss://`) URL."""
    base = base_url.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base[len("https://") :]
    elif base.startswith("http://"):
        base = "ws://" + base[len("http://") :]
    return base + path


def close_reason(text: str) -> str:
    """`text` cut to what a close frame may carry (123 bytes of UTF-8)."""
    data = text.encode()
    if len(data) <= 123:
        return text
    return data[:120].decode(errors="ignore") + "..."


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
