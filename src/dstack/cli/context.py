"""What every CLI command needs: where dstack keeps its state, and a client for the server.

Kept free of heavy imports: every command imports it before doing anything.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from dstack.paths import HomeLayout
from dstack.settings import EnvSettings

F = TypeVar("F", bound=Callable[..., Any])

if TYPE_CHECKING:
    from dstack.api.client import Client


def cli_env() -> EnvSettings:
    """The `DSTACK_*` variables this command runs with (`ConfigError` on an invalid one)."""
    return EnvSettings.read(os.environ)


def dstack_home() -> Path:
    """`$DSTACK_HOME`, else `~/.dstack`."""
    return cli_env().home


def home_layout() -> HomeLayout:
    """The files in the dstack home (`dstack.paths`)."""
    return cli_env().layout


def local_server() -> tuple[str, str]:
    """(url, token) of the local server, started in the background when it is not running
    (its runner with `$DSTACK_EXECUTOR`)."""
    from dstack.server.local import ensure_local_server

    env = cli_env()
    return ensure_local_server(env.home, executor=env.executor)


def local_client() -> Client:
    """A client for the local server, started in the background when it is not running.

    Inside a command, the client is closed when the command ends.
    """
    from dstack.api.client import Client

    url, token = local_server()
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
