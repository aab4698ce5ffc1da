"""`S3BlobStore`: blobs as objects in an S3 bucket (or anything that speaks S3).

Integrity. S3 can verify an upload against a checksum it knows (CRC32, CRC32C, CRC64NVME,
SHA-1, SHA-256), not against BLAKE3, the digest that names a blob. Uploads therefore send no
checksum header: computing one would be a second hash pass over every byte (the sha256 that
S3 could check costs more than the BLAKE3 itself), and a CRC chosen by the uploader proves
nothing about the digest the object is stored under. Instead every writer hashes what it
sends while it sends it and refuses to complete a wrong upload (`S3BlobStore.put_file`
deletes its own bad object; `dstack.api.presigned` holds back the last chunk until the
digest is checked, so S3 never receives a whole wrong object), and every reader verifies the
BLAKE3 digest of what it gets before the bytes count (`get_file`, `open`): a corrupt object
is named, never placed.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from dstack.errors import NotFoundError, StorageError
from dstack.models.artifacts import StorageAccess
from dstack.models.digests import LEGACY, Algorithm, Hasher, new_hasher
from dstack.storage.base import (
    CHUNK_SIZE,
    check_digest,
    hash_file,
    mismatch,
    replacing,
    verify,
    verify_bytes,
)

# Objects above this size are moved in parts, several at a time.
MULTIPART_THRESHOLD = 64 * 1024 * 1024
_HEAD_WORKERS = 16
_PRESIGN_METHODS = {"GET": "get_object", "PUT": "put_object"}


@dataclass(frozen=True)
class S3Location:
    """`s3://bucket/prefix` split into its parts; `prefix` has no leading or trailing `/`."""

    bucket: str
    prefix: str = ""


def parse_s3_url(url: str) -> S3Location:
    """`s3://bucket[/prefix]` → `S3Location`; anything else raises `StorageError`."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise StorageError(
            f"'{url}' is not an S3 location",
            hint="write it as s3://BUCKET or s3://BUCKET/PREFIX",
        )
    return S3Location(parts.netloc, parts.path.strip("/"))


class S3BlobStore:
    """Blobs at `<prefix>/blobs/ab/cdef...` in `bucket`.

    An S3 PUT is atomic, so a reader sees a whole object or none. Uploads are hashed while
    they are sent; an upload whose bytes do not match its digest is deleted again (only if
    no other writer replaced it meanwhile) and raises `BlobMismatchError`. Reads are
    verified as every store's are. Large objects go in parts (`MULTIPART_THRESHOLD`).
    boto3 errors become `StorageError` naming the bucket; a missing object `NotFoundError`.
    Thread-safe (boto3 clients are).

    `client` is a boto3 S3 client (injected by tests); by default one is made for
    `endpoint_url` with boto3's usual credential chain.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        client: Any = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self._owns_client = client is None
        self._client = client if client is not None else make_client(endpoint_url)
        self._base = f"{self.prefix}/blobs/" if self.prefix else "blobs/"

    def direct_access(self) -> StorageAccess:
        """Runners reach the bucket through URLs the server signs (`SupportsDirectAccess`)."""
        return StorageAccess(kind="presigned")

    def close(self) -> None:
        """Close the connections of the client this store made (not of an injected one)."""
        if self._owns_client:
            self._client.close()

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def key(self, digest: str) -> str:
        """The object key of a blob (whether or not it exists)."""
        check_digest(digest)
        return f"{self._base}{digest[:2]}/{digest[2:]}"

    def exists(self, digest: str) -> bool:
        return self._head(digest) is not None

    def missing(self, digests: list[str]) -> list[str]:
        """The distinct digests (in the order given) that are not stored: one HEAD each,
        several at a time."""
        unique = [check_digest(d) for d in dict.fromkeys(digests)]
        if len(unique) <= 1:
            return [d for d in unique if not self.exists(d)]
        with ThreadPoolExecutor(min(_HEAD_WORKERS, len(unique))) as pool:
            present = list(pool.map(self.exists, unique))
        return [d for d, there in zip(unique, present, strict=True) if not there]

    def size(self, digest: str) -> int:
        head = self._head(digest)
        if head is None:
            raise NotFoundError(f"blob {digest} not found in {self.location}")
        return int(head["ContentLength"])

    def put_bytes(self, data: bytes, digest: str) -> None:
        verify_bytes(data, check_digest(digest))
        if self.exists(digest):
            return
        self._call(
            "upload",
            digest,
            lambda: self._client.put_object(Bucket=self.bucket, Key=self.key(digest), Body=data),
        )

    def put_file(self, path: Path, digest: str) -> None:
        if self.exists(digest):
            return
        marker = uuid.uuid4().hex
        try:
            with path.open("rb") as file:
                hasher = new_hasher(os.fstat(file.fileno()).st_size)
                self._upload(_HashingReader(file, hasher), digest, marker)
        except OSError as exc:
            raise StorageError(f"cannot upload {path} as blob {digest}: {exc.strerror}") from exc
        try:
            verify(digest, hasher.hexdigest(), lambda: hash_file(path, LEGACY))
        except (StorageError, OSError):
            self._delete_own(digest, marker)
            raise mismatch(digest, hasher.hexdigest()) from None

    def open(self, digest: str) -> Iterator[bytes]:
        response = self._call(
            "read",
            digest,
            lambda: self._client.get_object(Bucket=self.bucket, Key=self.key(digest)),
        )
        return self._verified_chunks(response["Body"], digest)

    def get_file(self, digest: str, target: Path) -> None:
        with replacing(target) as (fd, tmp):
            os.close(fd)
            self._call("download", digest, lambda: self._download(digest, str(tmp)))
            verify(digest, hash_file(tmp), lambda: hash_file(tmp, LEGACY))

    def delete(self, digest: str) -> None:
        self._call(
            "delete",
            digest,
            lambda: self._client.delete_object(Bucket=self.bucket, Key=self.key(digest)),
        )

    def list_digests(self) -> Iterator[str]:
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._base):
                for item in page.get("Contents", []):
                    digest = _digest_of(item["Key"][len(self._base) :])
                    if digest is not None:
                        yield digest
        except Exception as exc:
            raise self._translate(exc, "list", None) from exc

    def presign(self, digest: str, method: str, *, expires_in: int = 3600) -> str:
        """A URL that lets its holder GET or PUT the blob for `expires_in` seconds without
        credentials. A PUT URL pins the key, not the content (see the module docstring):
        the uploader checks its bytes, every reader verifies them."""
        operation = _PRESIGN_METHODS.get(method.upper())
        if operation is None:
            raise StorageError(f"cannot presign '{method}'", hint="use GET or PUT")
        params = {"Bucket": self.bucket, "Key": self.key(digest)}
        return str(
            self._client.generate_presigned_url(operation, Params=params, ExpiresIn=expires_in)
        )

    def _upload(self, reader: _HashingReader, digest: str, marker: str) -> None:
        from boto3.s3.transfer import TransferConfig  # boto3: see make_client

        config = TransferConfig(
            multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_THRESHOLD
        )
        self._call(
            "upload",
            digest,
            lambda: self._client.upload_fileobj(
                reader,
                self.bucket,
                self.key(digest),
                ExtraArgs={"Metadata": {"dstack-upload": marker}},
                Config=config,
            ),
        )

    def _download(self, digest: str, tmp: str) -> None:
        from boto3.s3.transfer import TransferConfig  # boto3: see make_client

        config = TransferConfig(
            multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_THRESHOLD
        )
        self._client.download_file(self.bucket, self.key(digest), tmp, Config=config)

    def _delete_own(self, digest: str, marker: str) -> None:
        """Delete the blob only if this upload (`marker`) is what is stored: a concurrent
        writer's good copy must survive our bad one."""
        head = self._head(digest)
        if head is not None and head.get("Metadata", {}).get("dstack-upload") == marker:
            self.delete(digest)

    def _head(self, digest: str) -> dict[str, Any] | None:
        key = self.key(digest)
        try:
            return dict(self._client.head_object(Bucket=self.bucket, Key=key))
        except Exception as exc:
            if _status(exc) == 404:
                return None
            raise self._translate(exc, "inspect", digest) from exc

    def _verified_chunks(self, body: Any, digest: str) -> Iterator[bytes]:
        hasher = new_hasher()
        try:
            with contextlib.closing(body):
                for chunk in body.iter_chunks(CHUNK_SIZE):
                    hasher.update(chunk)
                    yield chunk
        except StorageError:
            raise
        except Exception as exc:
            raise self._translate(exc, "read", digest) from exc
        verify(digest, hasher.hexdigest(), lambda: self._digest_object(digest, LEGACY))

    def _digest_object(self, digest: str, algorithm: Algorithm) -> str:
        """The digest of the stored object, fetched again (a blob stored before BLAKE3)."""
        hasher = new_hasher(0, algorithm)
        response = self._call(
            "read",
            digest,
            lambda: self._client.get_object(Bucket=self.bucket, Key=self.key(digest)),
        )
        with contextlib.closing(response["Body"]) as body:
            for chunk in body.iter_chunks(CHUNK_SIZE):
                hasher.update(chunk)
        return hasher.hexdigest()

    def _call(self, action: str, digest: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except StorageError:
            raise
        except Exception as exc:
            raise self._translate(exc, action, digest) from exc

    def _translate(self, exc: Exception, action: str, digest: str | None) -> Exception:
        what = f"blob {digest}" if digest else "blobs"
        if isinstance(exc, OSError) and not _is_boto_error(exc):
            return exc  # a local file problem, reported by the caller
        if _status(exc) == 404:
            return NotFoundError(f"{what} not found in {self.location}")
        return StorageError(
            f"cannot {action} {what} in {self.location}: {exc}",
            hint="check the bucket, the endpoint URL and the credentials (AWS_* variables)",
        )


def make_client(endpoint_url: str | None = None) -> Any:
    """A boto3 S3 client; checksums only where S3 requires them (S3-compatible stores
    reject the newer defaults)."""
    # boto3 costs ~80 ms at import: only stores that talk to S3 load it, when they do
    import boto3
    from botocore.config import Config

    config = Config(
        signature_version="s3v4",
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"max_attempts": 5, "mode": "standard"},
    )
    return boto3.client("s3", endpoint_url=endpoint_url, config=config)


class _HashingReader:
    """A read-only, non-seekable view of a file that hashes what is read from it.

    Non-seekable on purpose: the transfer manager then reads it once, front to back, so
    the hash covers exactly the bytes sent.
    """

    def __init__(self, file: BinaryIO, hasher: Hasher) -> None:
        self._file = file
        self._hasher = hasher

    def read(self, size: int = -1) -> bytes:
        chunk = self._file.read(size)
        self._hasher.update(chunk)
        return chunk


def _digest_of(rest: str) -> str | None:
    shard, _, name = rest.partition("/")
    digest = shard + name
    if len(shard) != 2 or "/" in name:
        return None
    try:
        return check_digest(digest)
    except StorageError:
        return None


def _status(exc: Exception) -> int | None:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    code = response.get("Error", {}).get("Code")
    if code in ("404", "NoSuchKey", "NotFound"):
        return 404
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return int(status) if status is not None else None


def _is_boto_error(exc: Exception) -> bool:
    return type(exc).__module__.startswith(("botocore", "boto3", "s3transfer", "urllib3"))
