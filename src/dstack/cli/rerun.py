"""`dstack rerun RUN [--no-cache]`"""

from __future__ import annotations

import click

from dstack.cli.context import client_for, remote_option


@click.command()
@remote_option
@click.argument("run_name", metavar="RUN")
@click.option(
    "--no-cache", "reload", is_flag=True, help="Run every job, even those an earlier result fits."
)
def rerun(run_name: str, reload: bool, remote: str | None) -> None:
    """Submit RUN again as it was submitted: the same code, arguments and jobs, and the
    artifacts its tags and `X:latest` dependencies resolved to back then."""
    new = client_for(remote).rerun(run_name, reload=reload)
    click.echo(f"{new.name} (a re-run of {run_name}): {new.status.value}")
