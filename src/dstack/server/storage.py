"""The server's blob store, as its settings describe it: a local folder or an S3 bucket."""

from __future__ import annotations

from dstack.server.settings import ServerSettings
from dstack.storage.base import AdminBlobStore
from dstack.storage.local import LocalBlobStore
from dstack.storage.s3 import S3BlobStore, parse_s3_url


def open_blob_store(settings: ServerSettings) -> AdminBlobStore:
    """`S3BlobStore` for `storage = s3://bucket/prefix`, else `LocalBlobStore` in the blob
    folder. A malformed location raises `StorageError`; nothing is contacted here."""
    if settings.storage:
        location = parse_s3_url(settings.storage)
        return S3BlobStore(location.bucket, location.prefix, endpoint_url=settings.s3_endpoint_url)
    return LocalBlobStore(settings.resolved_blob_dir())


def close_blob_store(store: AdminBlobStore) -> None:
    """Release what the store holds open (S3 connections); most stores hold nothing."""
    store.close()
