"""Shared by the artifact commands: which run a `RUN | :TAG` names, the blob store, progress."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from dstack.api.client import Client
    from dstack.models.artifacts import JobArtifacts
    from dstack.storage.base import BlobStore


def resolve_run(client: Client, ref: str) -> str:
    """`:TAG` → the name of the run the current repository's tag names; anything else is a
    run name."""
    if not ref.startswith(":"):
        return ref
    from dstack.cli.scope import tags_repo_id
    from dstack.errors import NotFoundError

    tag = ref[1:]
    for t in client.list_tags(repo_id=tags_repo_id()):
        if t.name == tag:
            return t.run_name
    raise NotFoundError(f"tag '{tag}' does not exist", hint="see `dstack tags list`")


def run_artifacts(client: Client, ref: str) -> list[JobArtifacts]:
    """The run's artifacts; a manifest that fails the checks of `dstack.models` (a path
    with `..`, a mode beyond the permission bits: from an older or hostile server) is a
    `StorageError`, and nothing is written."""
    from pydantic import ValidationError

    from dstack.errors import StorageError

    try:
        return client.get_artifacts(resolve_run(client, ref))
    except ValidationError as exc:
        error = exc.errors()[0]
        raise StorageError(
            f"the server sent an invalid manifest: {error['msg']}",
            hint="nothing was copied; ask the server's admin to remove that run",
        ) from None


def blob_store(remote: str | None = None) -> BlobStore:
    """The blobs of the server a command talks to.

    The local server's store is read and written directly, as its runner does; a remote's
    through its blob endpoints (closed when the command ends).
    """
    if remote is not None:
        return remote_blob_store(remote)
    from dstack.cli.context import home_layout, local_client
    from dstack.storage.local import LocalBlobStore

    local_client()  # the store belongs to the server: make sure it exists
    return LocalBlobStore(home_layout().server.blobs)


def remote_blob_store(remote: str) -> BlobStore:
    """`HttpBlobStore` of the remote (`""`: the default one)."""
    import click

    from dstack.cli.remotes import resolve_remote
    from dstack.storage.http import HttpBlobStore

    chosen = resolve_remote(remote)
    store = HttpBlobStore(chosen.url, chosen.token)
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.call_on_close(store.close)
    return store


@contextmanager
def progress(total: int, description: str) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr for transfers over 64 MiB when stderr is a terminal;
    otherwise nothing is drawn (a bar's refresh thread would take CPU from the copy)."""
    if total < 64 << 20:
        yield lambda _: None
        return
    from dstack.cli.render import console

    err = console(stderr=True)
    if not err.is_terminal:
        yield lambda _: None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TransferSpeedColumn,
    )

    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=err,
        transient=True,
    )
    with bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)
