"""`dstack push (RUN | :TAG) [--remote NAME]`: copy a local run to a remote server."""

from __future__ import annotations

import click

from dstack.cli.context import remote_option


@click.command()
@click.argument("ref", metavar="RUN|:TAG")
@remote_option
def push(ref: str, remote: str | None) -> None:
    """Copy a finished local run (or the run a tag names, with the tag) and its artifacts to
    a remote. Only blobs the remote lacks are sent; run it again to resume."""
    from dstack.cli.artifacts import blob_store, remote_blob_store
    from dstack.cli.context import client_for, local_client
    from dstack.cli.runcopy import Side, run_copy_command

    target_name = remote or ""
    source = Side(local_client(), blob_store())
    target = Side(client_for(target_name), remote_blob_store(target_name))
    run_copy_command(source, target, ref, "pushed")
