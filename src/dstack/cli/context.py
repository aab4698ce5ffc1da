"""What every CLI command needs: where dstack keeps its state, and a client for the server."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

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


# --- remotes ---------------------------------------------------------------------------------
class Remote(BaseModel):
    """A team server this CLI talks to with `--remote NAME`."""

    model_config = ConfigDict(extra="forbid")

    name: str
    url: str
    token: str


class CliConfig(BaseModel):
    """`$DSTACK_HOME/config.yaml`: the remotes and which one plain `--remote` means."""

    model_config = ConfigDict(extra="forbid")

    remotes: list[Remote] = Field(default_factory=list)
    default: str | None = None

    def find(self, name: str) -> Remote | None:
        return next((r for r in self.remotes if r.name == name), None)

    def upsert(self, remote: Remote, *, make_default: bool) -> None:
        """Add or replace the remote of that name; the first one becomes the default."""
        self.remotes = [r for r in self.remotes if r.name != remote.name] + [remote]
        if make_default or self.default is None or self.find(self.default) is None:
            self.default = remote.name

    def delete(self, name: str) -> None:
        """Remove a remote; `NotFoundError` if there is none of that name."""
        from dstack.errors import NotFoundError

        if self.find(name) is None:
            raise NotFoundError(f"no remote named '{name}'", hint="see `dstack config`")
        self.remotes = [r for r in self.remotes if r.name != name]
        if self.default == name:
            self.default = self.remotes[0].name if self.remotes else None


def config_path() -> Path:
    return dstack_home() / "config.yaml"


def load_config(path: Path | None = None) -> CliConfig:
    """The CLI configuration; empty when the file does not exist. A file that is not valid
    YAML or has unknown keys is a `ConfigError` naming it."""
    import yaml
    from pydantic import ValidationError

    from dstack.errors import ConfigError

    path = path or config_path()
    if not path.exists():
        return CliConfig()
    try:
        data = yaml.safe_load(path.read_text()) or {}
        return CliConfig.model_validate(data)
    except (yaml.YAMLError, ValidationError) as exc:
        first = str(exc).splitlines()[0]
        raise ConfigError(
            f"{path} is not a valid dstack configuration: {first}",
            hint="fix the file or remove it and run `dstack config --url URL --token TOKEN`",
        ) from exc


def save_config(config: CliConfig, path: Path | None = None) -> None:
    """Write the configuration readable by the owner only (it holds tokens), atomically."""
    import yaml

    path = path or config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        yaml.safe_dump(config.model_dump(mode="json"), out, sort_keys=False)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def resolve_remote(name: str, config: CliConfig | None = None) -> Remote:
    """`""` → the default remote, else the remote of that name; `ConfigError` if none."""
    from dstack.errors import ConfigError

    config = config or load_config()
    if not config.remotes:
        raise ConfigError(
            "no remote server is configured",
            hint="add one with `dstack config --url URL --token TOKEN`",
        )
    wanted = name or config.default or config.remotes[0].name
    remote = config.find(wanted)
    if remote is None:
        known = ", ".join(r.name for r in config.remotes)
        raise ConfigError(
            f"no remote named '{wanted}' (known: {known})", hint="see `dstack config`"
        )
    return remote


def client_for(remote: str | None) -> Client:
    """The client a command uses: `None` → the local server (started on demand); `""` (a
    plain `--remote`) → the default remote; a name → that remote.

    Inside a command, the client is closed when the command ends.
    """
    if remote is None:
        return local_client()
    from dstack.api.client import Client

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
