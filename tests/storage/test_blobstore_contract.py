"""One contract, every blob store: the client part (`BlobStore`) over every implementation,
the owner's part (`AdminBlobStore`) over those that have it.

A client store is checked through the store it reaches (`Stores.backing`): the server's folder
behind `HttpBlobStore`, the bucket behind `PresignedBlobStore`, the store itself otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dstack.api.blobs import HttpBlobStore
from dstack.api.presigned import PresignedBlobStore
from dstack.errors import NotFoundError, StorageError
from dstack.models.digests import digest_bytes
from dstack.storage import AdminBlobStore, BlobStore, LocalBlobStore, MemoryBlobStore, missing_of
from dstack.storage.s3 import S3BlobStore

from .conftest import TOKEN, StorePresigner


def sha(data: bytes) -> str:
    return digest_bytes(data)


@dataclass
class Stores:
    client: BlobStore
    backing: AdminBlobStore


def _s3(request: pytest.FixtureRequest) -> S3BlobStore:
    return S3BlobStore(
        request.getfixturevalue("s3_bucket"),
        "team/dstack",
        endpoint_url=request.getfixturevalue("moto_s3").endpoint,
    )


def _own(store: AdminBlobStore) -> Stores:
    return Stores(store, store)


def _http(request: pytest.FixtureRequest) -> Stores:
    url, blobs = request.getfixturevalue("server")
    return Stores(HttpBlobStore(url, TOKEN), blobs)


def _presigned(request: pytest.FixtureRequest) -> Stores:
    bucket = _s3(request)
    return Stores(PresignedBlobStore(StorePresigner(bucket)), bucket)


ADMIN = ["local", "memory", pytest.param("s3", marks=pytest.mark.s3)]
CLIENT = [*ADMIN, "http", pytest.param("presigned", marks=pytest.mark.s3)]


def _admin(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> AdminBlobStore:
    factories: dict[str, Callable[[], AdminBlobStore]] = {
        "local": lambda: LocalBlobStore(tmp_path / "blobs"),
        "memory": MemoryBlobStore,
        "s3": lambda: _s3(request),
    }
    return factories[kind]()


@pytest.fixture(params=CLIENT)
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    kind = request.param
    if kind == "http":
        pair = _http(request)
    elif kind == "presigned":
        pair = _presigned(request)
    else:
        pair = _own(_admin(kind, request, tmp_path))
    yield pair
    pair.client.close()
    pair.backing.close()


@pytest.fixture
def store(stores: Stores) -> BlobStore:
    return stores.client


@pytest.fixture(params=ADMIN)
def admin(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AdminBlobStore]:
    store = _admin(request.param, request, tmp_path)
    yield store
    store.close()


# --- BlobStore: what every client may do --------------------------------------------------
def test_put_bytes_then_read_back(store: BlobStore) -> None:
    data = b"hello\n" * 1000
    store.put_bytes(data, sha(data))

    assert store.exists(sha(data))
    assert b"".join(store.open(sha(data))) == data
    assert store.size(sha(data)) == len(data)


def test_put_file_and_get_file_round_trip(store: BlobStore, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    store.put_file(source, sha(data))

    target = tmp_path / "out" / "copy.bin"
    store.get_file(sha(data), target)

    assert target.read_bytes() == data


def test_get_file_replaces_existing_target(store: BlobStore, tmp_path: Path) -> None:
    store.put_bytes(b"new", sha(b"new"))
    target = tmp_path / "t.txt"
    target.write_text("old")

    store.get_file(sha(b"new"), target)

    assert target.read_bytes() == b"new"


def test_put_is_idempotent(stores: Stores) -> None:
    stores.client.put_bytes(b"x", sha(b"x"))
    stores.client.put_bytes(b"x", sha(b"x"))

    assert list(stores.backing.list_digests()) == [sha(b"x")]


def test_mismatching_content_is_rejected_and_nothing_stored(stores: Stores, tmp_path: Path) -> None:
    store = stores.client
    wrong = sha(b"something else")
    with pytest.raises(StorageError, match="does not match"):
        store.put_bytes(b"data", wrong)
    source = tmp_path / "f"
    source.write_bytes(b"data")
    with pytest.raises(StorageError, match="does not match"):
        store.put_file(source, wrong)

    assert not store.exists(wrong)
    assert list(stores.backing.list_digests()) == []


def test_a_large_wrong_upload_stores_nothing(stores: Stores, tmp_path: Path) -> None:
    """Several chunks are sent before the digest is known: the upload still never completes
    (object storage cannot check BLAKE3 itself; the uploader holds back the last chunk)."""
    source = tmp_path / "big"
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 1))
    wrong = sha(b"not these bytes")
    with pytest.raises(StorageError, match="does not match"):
        stores.client.put_file(source, wrong)

    assert list(stores.backing.list_digests()) == []


def test_missing_blob_raises_not_found(store: BlobStore, tmp_path: Path) -> None:
    missing = sha(b"missing")
    assert not store.exists(missing)
    with pytest.raises(NotFoundError):
        list(store.open(missing))
    with pytest.raises(NotFoundError):
        store.get_file(missing, tmp_path / "t")
    with pytest.raises(NotFoundError):
        store.size(missing)
    assert not (tmp_path / "t").exists()


def test_bad_digest_is_rejected(store: BlobStore) -> None:
    with pytest.raises(StorageError, match="not a content digest"):
        store.put_bytes(b"a", "../../etc/passwd")


def test_empty_blob(store: BlobStore, tmp_path: Path) -> None:
    store.put_bytes(b"", sha(b""))
    store.get_file(sha(b""), tmp_path / "empty")

    assert (tmp_path / "empty").read_bytes() == b""


def test_missing_lists_absent_digests_once_in_order(store: BlobStore) -> None:
    store.put_bytes(b"have", sha(b"have"))
    asked = [sha(b"b"), sha(b"have"), sha(b"a"), sha(b"b")]

    assert missing_of(store, asked) == [sha(b"b"), sha(b"a")]
    assert missing_of(store, []) == []


def test_close_is_idempotent(store: BlobStore) -> None:
    store.put_bytes(b"c", sha(b"c"))
    store.close()
    store.close()


# --- AdminBlobStore: what the store's owner adds ------------------------------------------
def test_delete_removes_and_tolerates_missing(admin: AdminBlobStore) -> None:
    admin.put_bytes(b"a", sha(b"a"))
    admin.delete(sha(b"a"))
    admin.delete(sha(b"a"))

    assert not admin.exists(sha(b"a"))


def test_list_digests_lists_every_blob(admin: AdminBlobStore) -> None:
    blobs = [b"one", b"two", b"three"]
    for data in blobs:
        admin.put_bytes(data, sha(data))

    assert sorted(admin.list_digests()) == sorted(sha(d) for d in blobs)


# --- LocalBlobStore specifics -------------------------------------------------------------
def test_local_store_shards_and_detects_corruption_on_read(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    data = b"payload"
    digest = sha(data)
    store.put_bytes(data, digest)
    path = tmp_path / "blobs" / digest[:2] / digest[2:]
    assert path.read_bytes() == data

    path.chmod(0o644)
    path.write_bytes(b"tampered")
    target = tmp_path / "target"
    target.write_text("untouched")
    with pytest.raises(StorageError, match=digest):
        store.get_file(digest, target)

    assert target.read_text() == "untouched"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".dstack-")] == []


def test_local_store_leaves_no_temp_files_after_a_failed_put(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    source = tmp_path / "source.bin"
    source.write_bytes(os.urandom(3 * 1024 * 1024))
    with pytest.raises(StorageError):
        store.put_bytes(b"data", sha(b"other"))
    with pytest.raises(StorageError):
        store.put_file(source, sha(b"other"))

    assert list((tmp_path / "blobs" / "tmp").iterdir()) == []
    assert list(store.list_digests()) == []


# --- Stores written before BLAKE3 ---------------------------------------------------------
def legacy(data: bytes) -> str:
    """The name an older dstack gave a blob: its sha256."""
    return digest_bytes(data, "sha256")


@pytest.mark.parametrize("size", [7, 3 * 1024 * 1024 + 1])
def test_a_blob_named_by_its_sha256_is_read_verified_and_placed(
    stores: Stores, tmp_path: Path, size: int
) -> None:
    """A store filled before the switch keeps working: its blobs keep their sha256 names,
    every client reads, verifies and places them, and storing one again changes nothing."""
    data = os.urandom(size)
    old = legacy(data)
    stores.backing.put_bytes(data, old)
    store = stores.client

    assert store.exists(old)
    assert store.size(old) == size
    assert b"".join(store.open(old)) == data
    store.get_file(old, tmp_path / "placed")
    assert (tmp_path / "placed").read_bytes() == data
    (tmp_path / "again").write_bytes(data)
    store.put_file(tmp_path / "again", old)
    assert sorted(stores.backing.list_digests()) == [old]
    store.put_bytes(data, sha(data))  # new digests are BLAKE3: the same bytes, a second name
    assert sorted(stores.backing.list_digests()) == sorted([old, sha(data)])


def test_local_store_written_with_sha256_keeps_working(tmp_path: Path) -> None:
    """A folder as an older dstack left it (sha256 names, read-only files): read and placed;
    a blob corrupted on disk is still named as corrupt."""
    root = tmp_path / "blobs"
    good, bad = os.urandom(2 * 1024 * 1024), b"original"
    for data in (good, bad):
        path = root / legacy(data)[:2] / legacy(data)[2:]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if data is good else b"tampered")
        path.chmod(0o400)
    store = LocalBlobStore(root)

    store.get_file(legacy(good), tmp_path / "good")
    assert (tmp_path / "good").read_bytes() == good
    with pytest.raises(StorageError, match=legacy(bad)):
        store.get_file(legacy(bad), tmp_path / "bad")
    with pytest.raises(StorageError, match=legacy(bad)):
        b"".join(store.open(legacy(bad)))
    assert not (tmp_path / "bad").exists()
