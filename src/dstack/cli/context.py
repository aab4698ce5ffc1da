"""What every CLI command needs: where dstack keeps its state, and a client for the server.

Kept free of heavy imports: every command imports it before doing anything.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from dstack.paths import HomeLayout
from dstack.settings import EnvSettings

F = TypeVar("F", bound=Callable[..., Any])

if TYPE_CHECKING:
    from dstack.api.client import Client
    from dstack.cli.remotes import CliConfig, Remote


def cli_env() -> EnvSettings:
    """The `DSTACK_*` variables this command runs with (`ConfigError` on an invalid one)."""
    return EnvSettings.read(os.environ)


def dstack_home() -> Path:
    """`$DSTACK_HOME`, else `~/.dstack`."""
    return cli_env().home


def home_layout() -> HomeLayout:
    """The files in the dstack home (`dstack.paths`)."""
    return cli_env().layout


class _Start(threading.Thread):
    """`local_server()` on a thread of its own: see `start_local_server`."""

    def __init__(self) -> None:
        super().__init__(name="local-server-start", daemon=True)
        self.env = cli_env()
        self.result: tuple[str, str] | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = _ensure_local_server(self.env)
        except BaseException as exc:  # re-raised on the command's thread by `local_server`
            self.error = exc


_starting: list[_Start] = []


def start_local_server() -> None:
    """Begin finding or starting the local server on a thread while the command does its own
    work (reading the workflow, asking git): the first command of the day then waits for
    the server's start only for what remains of it. `local_server()` takes the answer."""
    if not _starting:
        _starting.append(_Start())
        _starting[0].start()


def local_server() -> tuple[str, str]:
    """(url, token) of the local server, started in the background when it is not running
    (its runner with `$DSTACK_EXECUTOR`)."""
    env = cli_env()
    start = _starting.pop() if _starting else None
    if start is None or start.env != env:  # none, or begun for another command's settings
        return _ensure_local_server(env)
    start.join()
    if start.error is not None:
        raise start.error
    assert start.result is not None
    return start.result


def _ensure_local_server(env: EnvSettings) -> tuple[str, str]:
    from dstack.server.local import ensure_local_server  # ~40 ms that remote commands skip

    return ensure_local_server(
        env.home, executor=env.executor, timeout=env.local_server_start_timeout
    )


def local_client() -> Client:
    """A client for the local server, started in the background when it is not running; it
    reads and writes the server's blob folder directly, as the local runner does.

    Inside a command, the client is closed when the command ends.
    """
    # Imported here, as in `client_for`: a command's `--help` and the errors it finds before
    # its first request do not pay for the HTTP client and the models (about 100 ms), nor a
    # remote's command for the local server's modules.
    from dstack.api.client import Client

    url, token = local_server()
    return _closed_with_command(Client(url, token, blob_dir=home_layout().server.blobs))


def client_for(remote: str | None) -> Client:
    """The client a command uses: `None` → the local server (started on demand); `""` (a
    plain `--remote`) → the default remote; a name → that remote.

    Inside a command, the client is closed when the command ends.
    """
    if remote is None:
        return local_client()
    # Imported here: see `local_client`.
    from dstack.api.client import Client

    chosen = remote_named(remote)
    return _closed_with_command(Client(chosen.url, chosen.token))


def cli_config() -> CliConfig:
    """The remotes this CLI knows (`$DSTACK_HOME/config.yaml`)."""
    # Imported here: pydantic and YAML (about 40 ms) only for commands that use a remote.
    from dstack.cli.remotes import config_path, load_config

    return load_config(config_path(dstack_home()))


def remote_named(name: str) -> Remote:
    """`""` → the default remote, else the remote of that name; `ConfigError` if none."""
    from dstack.cli.remotes import resolve_remote  # see `cli_config`

    return resolve_remote(name, cli_config())


def _closed_with_command(client: Client) -> Client:
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.call_on_close(client.close)
    return client


def remote_option(func: F) -> F:
    """`--remote [NAME]` on a command: the keyword `remote` is None without the option,
    `""` for a plain `--remote`, else the name."""
    return click.option(
        "--remote",
        "remote",
        is_flag=False,
        flag_value="",
        default=None,
        metavar="[NAME]",
        help="Use a remote server (the default one, or NAME) instead of the local one.",
    )(func)
