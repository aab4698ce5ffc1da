"""`dstack stop [-x] [-y] (RUN | -a)`"""

from __future__ import annotations

import click

from dstack.cli.context import client_for, confirm_or_stop, remote_option
from dstack.cli.scope import repo_for
from dstack.errors import ConfigError


@click.command()
@remote_option
@click.argument("run_name", metavar="RUN", required=False)
@click.option(
    "-a", "--all", "stop_all", is_flag=True, help="Stop every unfinished run of this repository."
)
@click.option("-x", "--abort", is_flag=True, help="Kill at once instead of stopping gracefully.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def stop(run_name: str | None, stop_all: bool, abort: bool, yes: bool, remote: str | None) -> None:
    """Stop runs: SIGTERM, then SIGKILL after a grace period (`-x`: at once)."""
    if bool(run_name) == stop_all:
        raise ConfigError(
            "name one run, or pass -a for all", hint="dstack stop RUN | dstack stop -a"
        )
    client = client_for(remote)
    if run_name:
        names = [run_name]
    else:
        runs = client.list_runs(all=True, repo_id=repo_for("stop -a"))
        names = [r.name for r in runs if not r.status.is_finished()]
        if not names:
            click.echo("No unfinished runs.")
            return
        if not yes:
            confirm_or_stop(f"Stop {len(names)} run(s): {', '.join(names)}?")
    verb = "Aborted" if abort else "Stopping"
    for name in names:
        client.stop_run(name, abort=abort)
        click.echo(f"{verb} {name}")
