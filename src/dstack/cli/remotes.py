"""Remote servers the CLI knows: `$DSTACK_HOME/config.yaml`, read and written.

The file's path is passed in (`config_path(home)`): this module knows no other part of the
CLI, so `cli.context`, which every command imports, may use it.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dstack.errors import ConfigError, NotFoundError
from dstack.paths import HomeLayout


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
        if self.find(name) is None:
            raise NotFoundError(f"no remote named '{name}'", hint="see `dstack config`")
        self.remotes = [r for r in self.remotes if r.name != name]
        if self.default == name:
            self.default = self.remotes[0].name if self.remotes else None


def config_path(home: Path) -> Path:
    """The configuration file of the dstack home `home`."""
    return HomeLayout(home).config_file


def load_config(path: Path) -> CliConfig:
    """The CLI configuration; empty when the file does not exist. A file that is not valid
    YAML or has unknown keys is a `ConfigError` naming it."""
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


def read_config(path: Path) -> CliConfig | None:
    """As `load_config`, but None for a file that cannot be read or is not valid: for
    guesses (is this word a remote's name? what to complete?) that must not fail."""
    try:
        return load_config(path)
    except (ConfigError, OSError):
        return None


def save_config(config: CliConfig, path: Path) -> None:
    """Write the configuration readable by the owner only (it holds tokens), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        yaml.safe_dump(config.model_dump(mode="json"), out, sort_keys=False)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def resolve_remote(name: str, config: CliConfig) -> Remote:
    """`""` → the default remote, else the remote of that name; `ConfigError` if none."""
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
