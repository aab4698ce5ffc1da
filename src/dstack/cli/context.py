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
    """`local_server()` on a thread of its own: see `start_local_server`.

    Not a daemon: a command that ends before it needs the server (a typo in a workflow's
    name) still waits for the start it began. Killed mid-start, it would let go of the
    start lock while its server comes up, and the next command would start a second
    server on the same home."""

    def __init__(self) -> None:
        super().__init__(name="local-server-start", daemon=False)
        self.env = cli_env()
        self.result: tuple[str, str] | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = _ensure_local_server(self.env)
        except BaseException as exc:  # re-raised on the command's thread by `local_server`
            self.error = exc


_starting: list[_Start] = []


def confirm_or_stop(question: str) -> None:
    """Ask before a change that can't be undone; "no" ends the command with exit 1 and
    changes nothing (Ctrl+C at the question still exits 130)."""
    if not click.confirm(question, default=False):
        click.echo("Nothing changed.", err=True)
        raise click.exceptions.Exit(1)


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


def local_runner_executor() -> str | None:
    """The executor the local server started its runner with, as its `server.json` says;
    None when it does not say (an older server, or the runner's own default)."""
    # server.local: ~40 ms that commands talking to a remote skip (`dstack run` has it already)
    from dstack.server.local import read_local_server

    info = read_local_server(dstack_home())
    return info.executor if info is not None else None


def running_local_server() -> tuple[str, str] | None:
    """(url, token) of the local server when it runs; None else. Starts nothing."""
    # server.local: ~40 ms that commands talking to a remote skip
    from dstack.server.local import live_local_server

    found = live_local_server(dstack_home())
    if found is None:
        return None
    return found.url, home_layout().server.token.read_text().strip()


def local_client() -> Client:
    """A client for the local server, started in the background when it is not running; it
    reads and writes the server's blob folder directly, as the local runner does.

    Inside a command, the client is closed when the command ends.
    """
    # Imported here, as in `client_for`: a command's `--help` and the errors it finds before
    # its first request do not pay for the HTTP client and the models (about 100 ms), nor a
    # remote's command for the local server's modules.
    from dstack.api.client import Client
    from dstack.api.transport import PLAIN_HTTP  # see above

    url, token = local_server()
    # The local server speaks plain HTTP: `http.client` carries it, without httpx's start.
    client = Client(url, token, blob_dir=home_layout().server.blobs, transport=PLAIN_HTTP)
    return _closed_with_command(client)


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
    `""` for a plain `--remote`, else the name.

    Which word after `--remote` is its value is decided before click parses (`remote_words`,
    called by the `dstack` group for every command), so the option never swallows a run's
    or a workflow's name."""
    return click.option(
        "--remote",
        "remote",
        is_flag=False,
        flag_value="",
        default=None,
        metavar="[NAME]",
        help="Use a remote server instead of the local one: the default remote, or NAME "
        "when the next word names one (`--remote=NAME` always does).",
    )(func)


def remote_words(args: list[str], command: click.Command) -> list[str]:
    """`args` with each bare `--remote` made explicit: `--remote=NAME` when the next word is
    the name of a configured remote, else `--remote=` (the default remote) with the next
    word left where it was, as an argument. Like git's optional values (`--color[=WHEN]`),
    but a remote's name may also follow as its own word, as kubectl's `--context NAME` does.

    Nothing after `--` is touched; for a command that hands the words after its first
    argument on (`dstack run train ...`), nothing after that argument either.
    """
    if "--remote" not in args:
        return args
    valued = {
        name
        for param in command.params
        if isinstance(param, click.Option) and not param.is_flag and not param.count
        for name in param.opts
    }
    interspersed = command.context_settings.get("allow_interspersed_args", True)
    out: list[str] = []
    i = 0
    while i < len(args):
        word = args[i]
        if word == "--" or (not interspersed and not word.startswith("-")):
            return out + args[i:]
        if word == "--remote":
            following = args[i + 1] if i + 1 < len(args) else None
            named = following is not None and _is_remote_name(following)
            out.append(f"--remote={following}" if named else "--remote=")
            i += 2 if named else 1
            continue
        out.append(word)
        if word in valued and i + 1 < len(args):
            out.append(args[i + 1])
            i += 1
        i += 1
    return out


def _is_remote_name(word: str) -> bool:
    if word.startswith("-"):
        return False
    from dstack.cli.remotes import config_path, read_config  # see `cli_config`

    config = read_config(config_path(dstack_home()))
    return config is not None and config.find(word) is not None
