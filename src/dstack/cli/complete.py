"""Shell completion of what the commands' arguments name: workflows (from `.dstack/`), runs
and tags (from the server the command would talk to), remotes (from `config.yaml`).

Enabled in a shell with `eval "$(_DSTACK_COMPLETE=bash_source dstack)"` (README,
"Shell completion"); click runs `dstack` with `_DSTACK_COMPLETE=bash_complete` and the words
typed so far, and prints what fits.

Completion must answer at once and never get in the way: it starts no server (a local server
that does not run completes no run), waits at most `_TIMEOUT` seconds for one, remembers
each answer `_FRESH` seconds (`<home>/cache/completion.json`), and answers nothing rather
than an error.

`COMPLETERS` lists which argument of which command completes what, in one table, applied
to the commands as the `dstack` group loads them (`attach_completers`).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

    from dstack.api.client import Client

Completer = Callable[[click.Context, click.Parameter, str], list["CompletionItem"]]

_TIMEOUT = 1.0
_FRESH = 10.0


def _items(names: list[str], incomplete: str) -> list[CompletionItem]:
    # completion only (the TAB key); each completer loads what it reads
    from click.shell_completion import CompletionItem

    return [CompletionItem(name) for name in names if name.startswith(incomplete)]


def workflows(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The workflows of the repository in the current folder."""
    # the config loader: ~30 ms that completing a run or remote skips
    from dstack.config import find_dstack_root, load_config

    try:
        names = load_config(find_dstack_root(Path.cwd())).workflow_names()
    except Exception:  # completion answers nothing rather than an error
        return []
    return _items(list(names), incomplete)


def remotes(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The remotes of `config.yaml`."""
    return _items(_remote_names(), incomplete)


def runs(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The runs of the server the command would use (`--remote`, else the local server)."""
    return _items(_ask(ctx, "runs", _run_names), incomplete)


def runs_and_tags(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """`RUN | :TAG`: the runs, and the current repository's tags as `:TAG`."""
    if incomplete.startswith(":"):
        return _items([f":{t}" for t in _ask(ctx, "tags", _tag_names)], incomplete)
    return _items(_ask(ctx, "runs", _run_names), incomplete)


def tags(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The current repository's tags."""
    return _items(_ask(ctx, "tags", _tag_names), incomplete)


def remote_or_argument(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """After `--remote`: a remote's name, or (the word may be the command's own argument,
    `dstack logs --remote RUN`) what the command's first argument completes, from the
    default remote."""
    found = remotes(ctx, param, incomplete)
    argument = next((p for p in ctx.command.params if isinstance(p, click.Argument)), None)
    completer = _table_entry(ctx, argument.name) if argument and argument.name else None
    if completer is not None:
        ctx.params["remote"] = ""
        found += completer(ctx, argument, incomplete)  # type: ignore[arg-type]
    return found


# command path -> {argument or option name -> completer}
COMPLETERS: dict[tuple[str, ...], dict[str, Completer]] = {
    ("run",): {"name": workflows},
    ("plan",): {"name": workflows},
    ("prune", "cache"): {"workflow": workflows},
    ("ps",): {"run_name": runs},
    ("logs",): {"run_name": runs},
    ("stop",): {"run_name": runs},
    ("rm",): {"run_name": runs},
    ("attach",): {"run_name": runs},
    ("ls",): {"ref": runs_and_tags},
    ("cp",): {"ref": runs_and_tags},
    ("push",): {"ref": runs_and_tags},
    ("pull",): {"ref": runs_and_tags},
    ("tags", "add"): {"run_name": runs},
    ("tags", "delete"): {"tag": tags},
    ("config",): {"delete": remotes},
}


def attach_completers(name: str, command: click.Command) -> None:
    """Give `command` (and its subcommands) the completers `COMPLETERS` lists for them."""
    _attach((name,), command)


def _attach(path: tuple[str, ...], command: click.Command) -> None:
    for param in command.params:
        completer = COMPLETERS.get(path, {}).get(param.name or "")
        if completer is None and param.name == "remote":  # `context.remote_option`
            completer = remote_or_argument
        if completer is not None:
            param._custom_shell_complete = completer
    if isinstance(command, click.Group):
        for sub_name, sub in command.commands.items():
            _attach((*path, sub_name), sub)


def _table_entry(ctx: click.Context, name: str) -> Completer | None:
    path = tuple(ctx.command_path.split()[1:])
    return COMPLETERS.get(path, {}).get(name)


def _remote_names() -> list[str]:
    # context and remotes: only completers that need a server or remote
    from dstack.cli.context import dstack_home
    from dstack.cli.remotes import config_path, read_config

    with contextlib.suppress(Exception):
        config = read_config(config_path(dstack_home()))
        return [r.name for r in config.remotes] if config is not None else []
    return []


def _run_names(client: Client) -> list[str]:
    return [run.name for run in client.list_runs(all=True)]


def _tag_names(client: Client) -> list[str]:
    # the repository scope: only tag completion needs it
    from dstack.cli.scope import tags_repo_id

    return [tag.name for tag in client.list_tags(tags_repo_id())]


def _ask(ctx: click.Context, what: str, fetch: Callable[[Client], list[str]]) -> list[str]:
    """`fetch` from the command's server, or what it answered less than `_FRESH` s ago;
    nothing when no server answers within `_TIMEOUT`."""
    try:
        server = _server(ctx)
        if server is None:
            return []
        url, token = server
        cache = _Cache.load()
        key = f"{what} {url}"
        names = cache.get(key)
        if names is None:
            # the HTTP client: ~150 ms only runs and tags need (not workflows)
            from dstack.api.client import Client

            with Client(url, token, timeout=_TIMEOUT) as client:
                names = fetch(client)
            cache.put(key, names)
        return names
    except Exception:  # completion answers nothing rather than an error
        return []


def _server(ctx: click.Context) -> tuple[str, str] | None:
    """(url, token) of the server the command would use; never starts the local one."""
    # context: only completers that ask a server
    from dstack.cli.context import remote_named, running_local_server

    remote = _given_remote(ctx)
    if ctx.command_path.split()[1:2] == ["pull"] and remote is None:
        remote = ""  # pull copies from a remote: the default one
    if remote is not None:
        chosen = remote_named(remote)
        return chosen.url, chosen.token
    return running_local_server()


def _given_remote(ctx: click.Context) -> str | None:
    """`--remote`'s value on this command or a parent (`runners --remote X token`)."""
    current: click.Context | None = ctx
    while current is not None:
        value = current.params.get("remote")
        if isinstance(value, str):
            # During completion a bare `--remote` may have taken the next word: a name no
            # remote has means the default one, as when the command runs.
            return value if value in _remote_names() else ""
        current = current.parent
    return None


class _Cache:
    """`<home>/cache/completion.json`: {key: [time, names]}, for `_FRESH` seconds."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data

    @classmethod
    def load(cls) -> _Cache:
        # context: only the completion cache's folder
        from dstack.cli.context import home_layout

        path = home_layout().cache_dir / "completion.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = {}
        return cls(path, data if isinstance(data, dict) else {})

    def get(self, key: str) -> list[str] | None:
        entry = self.data.get(key)
        if not isinstance(entry, list) or len(entry) != 2:
            return None
        at, names = entry
        fresh = isinstance(at, int | float) and 0 <= time.time() - at < _FRESH
        return [str(n) for n in names] if fresh and isinstance(names, list) else None

    def put(self, key: str, names: list[str]) -> None:
        now = time.time()
        kept = {k: v for k, v in self.data.items() if self._fresh(v, now)}
        kept[key] = [now, names]
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(kept))
            tmp.replace(self.path)

    @staticmethod
    def _fresh(entry: object, now: float) -> bool:
        if not isinstance(entry, list) or not entry or not isinstance(entry[0], int | float):
            return False
        return 0 <= now - entry[0] < _FRESH
