"""Where dstack keeps its files: the dstack home and the layout under it, spelled only here.

`<home>` is `$DSTACK_HOME`, else `~/.dstack` (`dstack.settings` reads the variable):

- `config.yaml`: the remotes the CLI knows (`dstack config`).
- `cache/`: what the CLI remembers having uploaded (code bundles, diffs).
- `server/` (0700): a server's own files (`ServerFiles`).
- `runner/`: the work dir of the runner started on this machine (the local server's, or a
  `dstack-runner start` without `--work-dir`).

Nothing here touches the disk: these are names; who creates a folder says so. Named tuples,
not dataclasses: every CLI command imports this, and `dataclasses` costs 6 ms to import.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

DEFAULT_HOME = Path("~") / ".dstack"
"""The dstack home when `DSTACK_HOME` is unset or empty (`~` expanded when resolved)."""


def resolve_home(value: str | None) -> Path:
    """The dstack home `DSTACK_HOME` names (`~` expanded), else `~/.dstack`."""
    return Path(value).expanduser() if value else DEFAULT_HOME.expanduser()


class ServerFiles(NamedTuple):
    """A server's folder, `<home>/server/` (0700), and the files in it."""

    dir: Path

    @property
    def token(self) -> Path:
        """The local server's admin token (0600), read by the CLI of the same user."""
        return self.dir / "token"

    @property
    def admin_token(self) -> Path:
        """A team server's generated admin token (0600), printed once at the first start."""
        return self.dir / "admin_token"

    @property
    def secret_key(self) -> Path:
        """The generated key that encrypts secrets at rest (0600)."""
        return self.dir / "secret_key"

    @property
    def server_json(self) -> Path:
        """`{"url", "pid"}` of the local server, written once it listens."""
        return self.dir / "server.json"

    @property
    def server_log(self) -> Path:
        """The output of the local server started in the background."""
        return self.dir / "server.log"

    @property
    def start_lock(self) -> Path:
        """Held while a CLI starts the local server, so that racing CLIs start only one."""
        return self.dir / "start.lock"

    @property
    def server_lock(self) -> Path:
        """Held (`flock`, with its pid) by the local server of this home for its whole life,
        from before it opens its database: a second one started meanwhile exits."""
        return self.dir / "server.lock"

    @property
    def runner_log(self) -> Path:
        """The output of the local server's own runner."""
        return self.dir / "runner.log"

    @property
    def database(self) -> Path:
        """The SQLite database (0600) when no database URL is configured."""
        return self.dir / "db.sqlite"

    @property
    def blobs(self) -> Path:
        """The blob store when no `--storage` is configured."""
        return self.dir / "blobs"

    @property
    def uploads(self) -> Path:
        """Blob uploads in flight, renamed into the store once their digest checks out."""
        return self.dir / "uploads"


class HomeLayout(NamedTuple):
    """The dstack home `root` and what lives in it."""

    root: Path

    @property
    def config_file(self) -> Path:
        return self.root / "config.yaml"

    @property
    def cache_dir(self) -> Path:
        """What the CLI remembers having uploaded: `bundles/<commit>`, `diffs/<digest>`."""
        return self.root / "cache"

    @property
    def server(self) -> ServerFiles:
        return ServerFiles(self.root / "server")

    @property
    def runner_dir(self) -> Path:
        """The default work dir of a runner on this machine."""
        return self.root / "runner"
