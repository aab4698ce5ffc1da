"""`dstack rm [-y] (RUN | -a [--all-repos])`"""

from __future__ import annotations

import click

from dstack.cli.context import client_for, remote_option
from dstack.cli.scope import all_repos_option, repo_for
from dstack.errors import ConfigError


@click.command()
@remote_option
@click.argument("run_name", metavar="RUN", required=False)
@click.option(
    "-a", "--all", "rm_all", is_flag=True, help="Remove every finished run of this repository."
)
@all_repos_option
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def rm(run_name: str | None, rm_all: bool, all_repos: bool, yes: bool, remote: str | None) -> None:
    """Remove finished runs with their logs."""
    if bool(run_name) == rm_all:
        raise ConfigError("name one run, or pass -a for all", hint="dstack rm RUN | dstack rm -a")
    client = client_for(remote)
    if run_name:
        names = [run_name]
    else:
        runs = client.list_runs(all=True, repo_id=repo_for("rm -a", all_repos=all_repos))
        names = [r.name for r in runs if r.status.is_finished()]
        if not names:
            click.echo("No finished runs.")
            return
    if not yes:
        click.confirm(f"Remove {len(names)} run(s): {', '.join(names)}?", abort=True)
    for name in names:
        client.delete_run(name)
        click.echo(f"Removed {name}")
