"""`S3BlobStore` specifics and `PresignedBlobStore`, against moto_server as S3."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
from tests.infra.moto import MotoServer

from dstack.api.presigned import PresignedBlobStore
from dstack.errors import NotFoundError, StorageError
from dstack.models.digests import digest_bytes
from dstack.storage import s3
from dstack.storage.s3 import S3BlobStore, parse_s3_url

from .conftest import StorePresigner

pytestmark = pytest.mark.s3


def sha(data: bytes) -> str:
    return digest_bytes(data)


@pytest.fixture
def store(s3_bucket: str, moto_s3: MotoServer) -> S3BlobStore:
    return S3BlobStore(s3_bucket, "team/dstack", endpoint_url=moto_s3.endpoint)


def test_blobs_are_objects_under_the_prefix(store: S3BlobStore, moto_s3: MotoServer) -> None:
    digest = sha(b"weights")
    store.put_bytes(b"weights", digest)

    body = moto_s3.client().get_object(
        Bucket=store.bucket, Key=f"team/dstack/blobs/{digest[:2]}/{digest[2:]}"
    )["Body"]
    assert body.read() == b"weights"


def test_large_files_go_in_parts_and_round_trip(
    store: S3BlobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(s3, "MULTIPART_THRESHOLD", 5 * 1024 * 1024)  # S3's smallest part
    data = os.urandom(11 * 1024 * 1024 + 5)
    (tmp_path / "big.bin").write_bytes(data)

    store.put_file(tmp_path / "big.bin", sha(data))
    store.get_file(sha(data), tmp_path / "copy.bin")

    assert (tmp_path / "copy.bin").read_bytes() == data
    assert store.size(sha(data)) == len(data)


def test_a_corrupt_object_is_detected_and_the_target_kept(
    store: S3BlobStore, moto_s3: MotoServer, tmp_path: Path
) -> None:
    digest = sha(b"good")
    moto_s3.client().put_object(Bucket=store.bucket, Key=store.key(digest), Body=b"evil")
    target = tmp_path / "t"
    target.write_text("untouched")

    with pytest.raises(StorageError, match=digest):
        store.get_file(digest, target)
    with pytest.raises(StorageError, match=digest):
        b"".join(store.open(digest))

    assert target.read_text() == "untouched"
    assert [p.name for p in tmp_path.iterdir()] == ["t"]


def test_an_unreachable_endpoint_is_one_clear_error(s3_bucket: str) -> None:
    import boto3
    from botocore.config import Config

    config = Config(retries={"max_attempts": 1}, connect_timeout=2)
    client = boto3.client("s3", endpoint_url="http://127.0.0.1:9", config=config)
    store = S3BlobStore(s3_bucket, client=client)

    with pytest.raises(StorageError, match=f"s3://{s3_bucket}") as caught:
        store.exists(sha(b"x"))

    assert "endpoint" in (caught.value.hint or "")


@pytest.mark.parametrize("url", ["bucket/prefix", "s3://", "gs://bucket", "s3://b/p?x=1"])
def test_bad_storage_urls_are_refused(url: str) -> None:
    with pytest.raises(StorageError, match="not an S3 location"):
        parse_s3_url(url)


def test_storage_urls_name_bucket_and_prefix() -> None:
    assert parse_s3_url("s3://models/team/a/") == s3.S3Location("models", "team/a")
    assert parse_s3_url("s3://models") == s3.S3Location("models", "")


# --- PresignedBlobStore -------------------------------------------------------------------
def test_presigned_store_round_trips_without_credentials(
    store: S3BlobStore, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    presigned = PresignedBlobStore(StorePresigner(store))
    request.addfinalizer(presigned.close)
    data = os.urandom(2 * 1024 * 1024 + 3)
    (tmp_path / "model.bin").write_bytes(data)

    presigned.put_file(tmp_path / "model.bin", sha(data))
    presigned.put_bytes(b"", sha(b""))
    presigned.get_file(sha(data), tmp_path / "copy.bin")

    assert (tmp_path / "copy.bin").read_bytes() == data
    assert store.exists(sha(data))
    assert presigned.size(sha(data)) == len(data)
    assert b"".join(presigned.open(sha(b""))) == b""
    assert presigned.missing([sha(data), sha(b"nope")]) == [sha(b"nope")]


def test_presigned_store_refuses_mismatches_and_reports_missing_blobs(
    store: S3BlobStore, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    presigned = PresignedBlobStore(StorePresigner(store))
    request.addfinalizer(presigned.close)
    (tmp_path / "f").write_bytes(b"data")

    with pytest.raises(StorageError, match="does not match"):
        presigned.put_file(tmp_path / "f", sha(b"other"))
    with pytest.raises(NotFoundError):
        presigned.get_file(sha(b"absent"), tmp_path / "t")

    assert not store.exists(sha(b"other"))
    assert not (tmp_path / "t").exists()


def test_presigned_download_is_verified(
    store: S3BlobStore, moto_s3: MotoServer, tmp_path: Path
) -> None:
    digest = sha(b"good")
    moto_s3.client().put_object(Bucket=store.bucket, Key=store.key(digest), Body=b"evil")

    presigned = PresignedBlobStore(StorePresigner(store))
    with contextlib.closing(presigned), pytest.raises(StorageError, match="does not match"):
        presigned.get_file(digest, tmp_path / "t")

    assert not (tmp_path / "t").exists()
