"""`LocalBlobStore` fast paths: storing in the read that hashes, moving, verified copies out."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from dstack.errors import StorageError
from dstack.storage import LocalBlobStore
from dstack.storage.manifests import scan
from dstack.storage.statcache import StatCache
from dstack.storage.transfer import push

from .conftest import OLD_NS, sha, write_tree

BIG = 3 * 1024 * 1024 + 11  # over one chunk: the threaded copy paths


def blob_files(store: LocalBlobStore) -> list[Path]:
    return [store.path(d) for d in store.list_digests()]


@pytest.mark.parametrize("size", [0, 5, BIG])
def test_ingest_stores_the_file_and_returns_its_digest(tmp_path: Path, size: int) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    data = os.urandom(size)
    write_tree(tmp_path, {"f": data}, mtime_ns=OLD_NS)

    assert store.ingest(tmp_path / "f") == (sha(data), True)
    assert store.ingest(tmp_path / "f") == (sha(data), False)
    assert store.path(sha(data)).read_bytes() == data
    assert stat.S_IMODE(store.path(sha(data)).stat().st_mode) == 0o400
    assert list((tmp_path / "blobs" / "tmp").iterdir()) == []


@pytest.mark.parametrize("size", [5, BIG])
def test_ingest_of_a_file_that_changed_since_its_stat_stores_nothing(
    tmp_path: Path, size: int
) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    path = tmp_path / "f"
    write_tree(tmp_path, {"f": b"x" * size}, mtime_ns=OLD_NS)
    seen = path.stat()
    write_tree(tmp_path, {"f": b"y" * (size + 1)}, mtime_ns=OLD_NS + 1)

    digest, stored = store.ingest(path, seen)

    assert (digest, stored) == (sha(b"y" * (size + 1)), False)
    assert list(store.list_digests()) == []


def test_ingest_of_a_missing_file_raises_the_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        LocalBlobStore(tmp_path / "blobs").ingest(tmp_path / "gone")


def test_scan_with_ingest_stores_every_file_so_push_sends_nothing(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    files = {"a": b"alpha", "sub/big": os.urandom(BIG), "sub/dup": b"alpha"}
    write_tree(tmp_path / "out", files, mtime_ns=OLD_NS)
    cache = StatCache(None)

    manifest = scan(
        tmp_path / "out",
        "out",
        stat_cache=cache,
        ingest=lambda path, st: store.ingest(path, st)[0],
    )
    stats = push(manifest, tmp_path / "out", store, stat_cache=cache)

    assert sorted(store.list_digests()) == sorted({sha(d) for d in files.values()})
    assert stats.files == 0
    assert [f.digest for f in manifest.files] == [
        sha(files[k]) for k in ("a", "sub/big", "sub/dup")
    ]
    assert (tmp_path / "out" / "sub" / "big").read_bytes() == files["sub/big"]


def test_a_settled_cache_vouches_for_fresh_files_so_a_move_reads_them_once(
    tmp_path: Path,
) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    data = os.urandom(BIG)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "new.bin").write_bytes(data)  # just written: "racily clean"
    reads: list[Path | str] = []

    def counting(path: Path | str) -> str:
        reads.append(path)
        return sha(Path(path).read_bytes())

    cache = StatCache(None, hasher=counting)
    cache.settle()
    manifest = scan(tmp_path / "out", "out", stat_cache=cache)
    st = (tmp_path / "out" / "new.bin").stat()

    assert cache.lookup(tmp_path / "out" / "new.bin", st) == sha(data)
    push(manifest, tmp_path / "out", store, move=True, stat_cache=cache)

    assert len(reads) == 1
    assert not (tmp_path / "out" / "new.bin").exists()
    assert store.path(sha(data)).read_bytes() == data


def test_an_unsettled_cache_forgets_fresh_files(tmp_path: Path) -> None:
    path = tmp_path / "new"
    path.write_bytes(b"fresh")
    cache = StatCache(None)

    cache.digest(path, path.stat())

    assert cache.lookup(path, path.stat()) is None


def test_adopt_copies_a_file_with_another_hard_link_and_leaves_the_link_alone(
    tmp_path: Path,
) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    write_tree(tmp_path / "job", {"f": b"linked"}, mtime_ns=OLD_NS)
    os.link(tmp_path / "job" / "f", tmp_path / "job" / "g")

    store.adopt(tmp_path / "job" / "f", sha(b"linked"))

    blob = store.path(sha(b"linked"))
    assert blob.read_bytes() == b"linked"
    assert blob.stat().st_ino != (tmp_path / "job" / "g").stat().st_ino
    assert not (tmp_path / "job" / "f").exists()


def test_get_file_of_a_corrupt_large_blob_fails_and_leaves_the_target(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    data = os.urandom(BIG)
    store.put_bytes(data, sha(data))
    blob = store.path(sha(data))
    blob.chmod(0o644)
    with blob.open("r+b") as file:
        file.seek(BIG - 100)
        file.write(b"\0" * 10)
    target = tmp_path / "copy.bin"
    target.write_text("untouched")

    with pytest.raises(StorageError, match=sha(data)):
        store.get_file(sha(data), target)

    assert target.read_text() == "untouched"
    assert {p.name for p in tmp_path.iterdir()} == {"blobs", "copy.bin"}


def test_get_file_of_a_large_blob_is_a_verified_copy(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    data = os.urandom(BIG)
    store.put_bytes(data, sha(data))

    store.get_file(sha(data), tmp_path / "copy.bin")

    assert (tmp_path / "copy.bin").read_bytes() == data
    assert (tmp_path / "copy.bin").stat().st_ino != store.path(sha(data)).stat().st_ino
