"""Content-addressed blob storage: `BlobStore` and its implementations.

`manifests.scan`, `transfer.push`/`place` and `statcache.StatCache` move artifact folders in
and out of a store; `http.HttpBlobStore` reaches a server's store (imported from its module,
to keep httpx off paths that do not need it).
"""

from dstack.storage.base import AdminBlobStore, BlobMismatchError, BlobStore, missing_of
from dstack.storage.local import LocalBlobStore
from dstack.storage.memory import MemoryBlobStore

__all__ = [
    "AdminBlobStore",
    "BlobMismatchError",
    "BlobStore",
    "LocalBlobStore",
    "MemoryBlobStore",
    "missing_of",
]
