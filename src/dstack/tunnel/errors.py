"""Why a tunnel connection cannot be opened."""

from __future__ import annotations

from dstack.errors import DstackError


class TunnelError(DstackError):
    """A port cannot be forwarded now. `status` is the HTTP status the server refuses the
    client's WebSocket with; the message is one line for the user."""

    def __init__(self, message: str, hint: str | None = None, *, status: int = 502) -> None:
        super().__init__(message, hint)
        self.status = status
