"""`dstack pull (RUN | :TAG) [--remote NAME]`: copy a remote run here."""

from __future__ import annotations

import click
from pydantic import ValidationError

from dstack.api.transfer import Side
from dstack.cli.context import client_for, local_client, remote_option
from dstack.cli.runcopy import run_copy_command
from dstack.errors import StorageError


@click.command()
@click.argument("ref", metavar="RUN|:TAG")
@remote_option
def pull(ref: str, remote: str | None) -> None:
    """Copy a finished remote run (or the run a tag names, with the tag) and its artifacts
    into the local store, so `dstack cp`, `ls` and deps use it here. Only missing blobs are
    fetched; run it again to resume."""
    source = Side.of(client_for(remote or ""))
    target = Side.of(local_client())
    try:
        run_copy_command(source, target, ref, "pulled")
    except ValidationError as exc:  # a manifest with `..`, a mode beyond 0o777...
        raise StorageError(
            f"the remote sent an invalid run: {exc.errors()[0]['msg']}",
            hint="nothing of it was stored here; ask the remote's admin to remove that run",
        ) from None
