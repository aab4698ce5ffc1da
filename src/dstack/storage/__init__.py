"""Content-addressed blob storage: `BlobStore` and its implementations.

`manifests.scan`, `transfer.push`/`place` and `statcache.StatCache` move artifact folders in
and out of a store. The stores a client reaches through a server (`HttpBlobStore`,
`PresignedBlobStore`) speak the server's HTTP API and live with it, in `dstack.api`.
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
