"""A run's artifacts through the typed client: which run `RUN | :TAG` names, its manifests,
and copying their files out of the server's blob store (`dstack ls`, `dstack cp`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from dstack.errors import NotFoundError, StorageError

if TYPE_CHECKING:
    from dstack.api.client import Client
    from dstack.models.artifacts import JobArtifacts, Manifest
    from dstack.storage.transfer import Progress, TransferStats


def resolve_run(client: Client, ref: str, *, tags_repo: Callable[[], str] | None = None) -> str:
    """`:TAG` → the name of the run that the tag of repository `tags_repo()` names (asked
    only for a tag); anything else is a run name. `NotFoundError` if there is no such tag."""
    if not ref.startswith(":"):
        return ref
    if tags_repo is None:
        raise ValueError(f"resolving {ref} needs the repository of its tag (tags_repo)")
    tag = ref[1:]
    for t in client.list_tags(repo_id=tags_repo()):
        if t.name == tag:
            return t.run_name
    raise NotFoundError(f"tag '{tag}' does not exist", hint="see `dstack tags list`")


def run_artifacts(
    client: Client, ref: str, *, tags_repo: Callable[[], str] | None = None
) -> list[JobArtifacts]:
    """The artifacts of the run `ref` names (`resolve_run`); a manifest that fails the
    checks of `dstack.models` (a path with `..`, a mode beyond the permission bits: from an
    older or hostile server) is a `StorageError`, and nothing is written."""
    try:
        return client.get_artifacts(resolve_run(client, ref, tags_repo=tags_repo))
    except ValidationError as exc:
        error = exc.errors()[0]
        raise StorageError(
            f"the server sent an invalid manifest: {error['msg']}",
            hint="nothing was copied; ask the server's admin to remove that run",
        ) from None


def download(
    client: Client, manifest: Manifest, target: Path, *, progress: Progress | None = None
) -> TransferStats:
    """Write the files of `manifest` under `target` from the server's blob store, each
    verified against its digest (`storage.transfer.place`); `progress(n)` per n bytes."""
    from dstack.storage.transfer import place  # 35 ms at start: only `dstack cp` needs it

    return place(manifest, target, client.blob_store(), progress=progress)
