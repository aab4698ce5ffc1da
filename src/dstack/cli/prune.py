"""`dstack prune cache WORKFLOW`"""

from __future__ import annotations

from pathlib import Path

import click

from dstack.cli.context import client_for, remote_option
from dstack.repo.git import read_repo_state


@click.group()
def prune() -> None:
    """Free space taken by saved state."""


@prune.command("cache")
@click.argument("workflow")
@remote_option
def prune_cache(workflow: str, remote: str | None) -> None:
    """Empty the saved `cache:` folders of WORKFLOW in this repository."""
    state = read_repo_state(Path.cwd())
    deleted = client_for(remote).prune_cache(state.repo_id, workflow)
    click.echo(f"Emptied {deleted} cached path(s) of workflow '{workflow}'.")
