"""Content-addressed blob storage: `BlobStore` and its implementations."""

from dstack.storage.base import BlobStore
from dstack.storage.local import LocalBlobStore
from dstack.storage.memory import MemoryBlobStore

__all__ = ["BlobStore", "LocalBlobStore", "MemoryBlobStore"]
