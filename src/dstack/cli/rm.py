"""`dstack rm [-y] (RUN | -a [--all-repos])`"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from dstack.cli.context import client_for, confirm_or_stop, remote_option
from dstack.cli.render import size
from dstack.cli.scope import all_repos_option, repo_for
from dstack.errors import ConfigError, ConflictError, NotFoundError

if TYPE_CHECKING:
    from dstack.api.client import Client
    from dstack.models.runs_api import RunDeleted


@click.command()
@remote_option
@click.argument("run_name", metavar="RUN", required=False)
@click.option(
    "-a",
    "--all",
    "rm_all",
    is_flag=True,
    help="Remove every finished run of this repository (tagged runs are kept).",
)
@all_repos_option
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def rm(run_name: str | None, rm_all: bool, all_repos: bool, yes: bool, remote: str | None) -> None:
    """Remove finished runs with their logs. Their artifacts' space comes back once garbage
    collection passes (blobs are kept for its grace period, an hour by default)."""
    if bool(run_name) == rm_all:
        raise ConfigError("name one run, or pass -a for all", hint="dstack rm RUN | dstack rm -a")
    client = client_for(remote)
    if run_name:
        _say_freed([_delete(client, run_name)])
        return
    names = _removable(client, repo_for("rm -a", all_repos=all_repos))
    if not names:
        click.echo("No finished runs to remove.")
        return
    if not yes:
        confirm_or_stop(f"Remove {len(names)} run(s): {', '.join(names)}?")
    removed: list[RunDeleted] = []
    refused: list[str] = []
    for name in names:
        try:
            removed.append(_delete(client, name))
        except (ConflictError, NotFoundError) as exc:  # tagged or gone meanwhile
            refused.append(exc.message)
    for message in refused:
        click.echo(f"Skipped: {message}", err=True)
    _say_freed(removed)


def _removable(client: Client, repo_id: str | None) -> list[str]:
    """The finished runs `rm -a` removes; the tagged ones are left out, said in one line."""
    runs = client.list_runs(all=True, repo_id=repo_id)
    tagged: dict[str, list[str]] = {}
    for tag in client.list_tags(repo_id=repo_id):
        tagged.setdefault(tag.run_name, []).append(tag.name)
    finished = [run.name for run in runs if run.status.is_finished()]
    kept = [name for name in finished if name in tagged]
    if kept:
        listed = ", ".join(f"{name} ({', '.join(sorted(tagged[name]))})" for name in kept)
        click.echo(
            f"Skipping {len(kept)} tagged run(s): {listed} (`dstack tags delete TAG` first)",
            err=True,
        )
    return [name for name in finished if name not in tagged]


def _delete(client: Client, name: str) -> RunDeleted:
    deleted = client.delete_run(name)
    click.echo(f"Removed {name}")
    return deleted


def _say_freed(removed: list[RunDeleted]) -> None:
    """`N runs removed; X will be freed within 1 hour (garbage collection)`."""
    if not removed:
        click.echo("No runs removed.")
        return
    count = f"{len(removed)} run{'s' if len(removed) > 1 else ''} removed"
    freed = sum(r.freed_bytes for r in removed)
    grace = max(r.gc_grace_seconds for r in removed)
    if freed == 0:
        click.echo(f"{count}; no files of their own to free")
    elif grace <= 0:
        click.echo(f"{count}; {size(freed)} freed")
    else:
        within = _span(grace)
        click.echo(f"{count}; {size(freed)} will be freed within {within} (garbage collection)")


def _span(seconds: float) -> str:
    """`1 hour`, `90 minutes`, `45 seconds`."""
    for unit, length in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= length and seconds % length == 0:
            n = int(seconds // length)
            return f"{n} {unit}{'s' if n > 1 else ''}"
    if seconds >= 60:
        n = round(seconds / 60)
        return f"{n} minute{'s' if n > 1 else ''}"
    n = max(round(seconds), 1)
    return f"{n} second{'s' if n > 1 else ''}"
