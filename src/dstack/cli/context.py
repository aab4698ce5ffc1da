"""What every CLI command needs: where dstack keeps its state, and a client for the server.

Kept free of heavy imports: every command imports it before doing anything.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

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
    from dstack.api.client import Client
    from dstack.server.local import ensure_local_server

    url, token = ensure_local_server(dstack_home(), executor=os.environ.get("DSTACK_EXECUTOR"))
    return _closed_with_command(Client(url, token))


def client_for(remote: str | None) -> Client:
    """The client a command uses: `None` → the local server (started on demand); `""` (a
    plain `--remote`) → the default remote; a name → that remote.

    Inside a command, the client is closed when the command ends.
    """
    if remote is None:
        return local_client()
    from dstack.api.client import Client
    from dstack.cli.remotes import resolve_remote

    chosen = resolve_remote(remote)
    return _closed_with_command(Client(chosen.url, chosen.token))


def _closed_with_command(client: Client) -> Client:
    import click

    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.call_on_close(client.close)
    return client


def remote_option(func: F) -> F:
    """`--remote [NAME]` on a command: the keyword `remote` is None without the option,
    `""` for a plain `--remote`, else the name."""
    import click

    return click.option(
        "--remote",
        "remote",
        is_flag=False,
        flag_value="",
        default=None,
        metavar="[NAME]",
        help="Use a remote server (the default one, or NAME) instead of the local one.",
    )(func)
