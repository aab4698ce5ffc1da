"""What every CLI command needs: where dstack keeps its state, and a client for the server."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dstack.api.client import Client


def dstack_home() -> Path:
    """`$DSTACK_HOME`, else `~/.dstack`."""
    env = os.environ.get("DSTACK_HOME")
    return Path(env).expanduser() if env else Path.home() / ".dstack"


def local_client() -> Client:
    """A client for the local server, started in the background when it is not running.

    Inside a command, the client is closed when the command ends.
    """
    import click

    from dstack.api.client import Client
    from dstack.server.local import ensure_local_server

    url, token = ensure_local_server(dstack_home(), executor=os.environ.get("DSTACK_EXECUTOR"))
    client = Client(url, token)
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.call_on_close(client.close)
    return client
