"""`dstack push (RUN | :TAG) [--remote NAME]`: copy a local run to a remote server."""

from __future__ import annotations

import click

from dstack.api.transfer import Side
from dstack.cli.context import client_for, local_client, remote_option
from dstack.cli.runcopy import run_copy_command


@click.command()
@click.argument("ref", metavar="RUN|:TAG")
@remote_option
def push(ref: str, remote: str | None) -> None:
    """Copy a finished local run (or the run a tag names, with the tag) and its artifacts to
    a remote. Only blobs the remote lacks are sent; run it again to resume."""
    source = Side.of(local_client())
    target = Side.of(client_for(remote or ""))
    run_copy_command(source, target, ref, "pushed")
