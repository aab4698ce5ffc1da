"""Which blob store a job's artifacts go to: the server's folder, S3 directly, or HTTP."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from dstack.models.artifacts import StorageAccess
from dstack.storage.base import BlobStore
from dstack.storage.local import LocalBlobStore

if TYPE_CHECKING:
    from dstack.api.runner import RunnerApi

BlobStoreFactory = Callable[[StorageAccess], BlobStore]


def open_blob_store(access: StorageAccess, api: RunnerApi) -> BlobStore:
    """`LocalBlobStore` when `access` names a folder this runner can write, else the server's
    store as `api` reaches it with the runner's credential (`RunnerApi.blob_store`:
    `PresignedBlobStore` when the server stores blobs in S3, else HTTP).

    The local server hands its own runner the folder, which saves copying every byte through
    HTTP; a runner on another machine (or another user) cannot write it and uses the API.
    With S3 the bytes go straight between runner and bucket, on URLs the server signs.
    """
    if access.kind == "local" and access.path and _writable_dir(Path(access.path)):
        return LocalBlobStore(Path(access.path))
    return api.blob_store(access)


def _writable_dir(path: Path) -> bool:
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)
