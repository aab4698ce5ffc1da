"""`dstack pull (RUN | :TAG) [--remote NAME]`: copy a remote run here."""

from __future__ import annotations

import click

from dstack.cli.context import remote_option


@click.command()
@click.argument("ref", metavar="RUN|:TAG")
@remote_option
def pull(ref: str, remote: str | None) -> None:
    """Copy a finished remote run (or the run a tag names, with the tag) and its artifacts
    into the local store, so `dstack cp`, `ls` and deps use it here. Only missing blobs are
    fetched; run it again to resume."""
    from pydantic import ValidationError

    from dstack.cli.artifacts import blob_store, remote_blob_store
    from dstack.cli.context import client_for, local_client
    from dstack.cli.runcopy import Side, run_copy_command
    from dstack.errors import StorageError

    source_name = remote or ""
    source = Side(client_for(source_name), remote_blob_store(source_name))
    target = Side(local_client(), blob_store())
    try:
        run_copy_command(source, target, ref, "pulled")
    except ValidationError as exc:  # a manifest with `..`, a mode beyond 0o777...
        raise StorageError(
            f"the remote sent an invalid run: {exc.errors()[0]['msg']}",
            hint="nothing of it was stored here; ask the remote's admin to remove that run",
        ) from None
