"""`dstack workflows`: the workflows of the repository in the current folder."""

from __future__ import annotations

from pathlib import Path

import click

from dstack.cli.render import console, table
from dstack.config import find_dstack_root, load_config


@click.command(help="List the workflows of this repository: name, provider and help.")
def workflows() -> None:
    config = load_config(find_dstack_root(Path.cwd()))
    names = config.workflow_names()
    if not names:
        click.echo("No workflows yet: add them to .dstack/workflows.yaml.")
        return
    rows = table("NAME", "PROVIDER", "HELP")
    for name in names:
        rows.add_row(name, config.provider(name), config.help(name) or "")
    console().print(rows)
