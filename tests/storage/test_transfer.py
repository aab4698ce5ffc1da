"""`push` and `place`: artifact folders in and out of a blob store."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from dstack.errors import StorageError
from dstack.models.artifacts import FileEntry, Manifest
from dstack.storage import BlobStore, LocalBlobStore, MemoryBlobStore
from dstack.storage.manifests import scan
from dstack.storage.statcache import StatCache
from dstack.storage.transfer import place, push

from .conftest import OLD_NS, sha, write_tree

TREE = {"a.txt": b"alpha", "sub/b.bin": os.urandom(3 * 1024 * 1024 + 5), "sub/dup": b"alpha"}


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    factories: dict[str, Callable[[], BlobStore]] = {
        "local": lambda: LocalBlobStore(tmp_path / "blobs"),
        "memory": MemoryBlobStore,
    }
    return factories[request.param]()


def scanned(root: Path) -> Manifest:
    return scan(root, "out")


def test_push_then_place_round_trip_bytes_and_modes(store: BlobStore, tmp_path: Path) -> None:
    write_tree(tmp_path / "out", TREE)
    (tmp_path / "out" / "sub" / "b.bin").chmod(0o750)
    manifest = scanned(tmp_path / "out")
    sent: list[int] = []

    stats = push(manifest, tmp_path / "out", store, progress=sent.append)
    placed = place(manifest, tmp_path / "job" / "out", store)

    assert (stats.files, stats.skipped_files) == (2, 1)  # "sub/dup" has the content of a.txt
    assert sum(sent) == stats.bytes == len(TREE["a.txt"]) + len(TREE["sub/b.bin"])
    assert placed.files == 3
    for rel, data in TREE.items():
        copy = tmp_path / "job" / "out" / rel
        assert copy.read_bytes() == data
        assert copy.stat().st_mode & 0o777 == (tmp_path / "out" / rel).stat().st_mode & 0o777


def test_second_push_uploads_nothing(store: BlobStore, tmp_path: Path) -> None:
    write_tree(tmp_path / "out", TREE)
    push(scanned(tmp_path / "out"), tmp_path / "out", store)

    again = push(scanned(tmp_path / "out"), tmp_path / "out", store)

    assert (again.files, again.bytes, again.skipped_files) == (0, 0, 3)


def test_file_modified_after_scan_is_stored_under_its_new_digest(
    store: BlobStore, tmp_path: Path
) -> None:
    write_tree(tmp_path / "out", {"log.txt": b"epoch 1\n", "gone.txt": b"bye"})
    manifest = scanned(tmp_path / "out")
    (tmp_path / "out" / "log.txt").write_bytes(b"epoch 2\n")  # same size, new content
    (tmp_path / "out" / "gone.txt").unlink()

    push(manifest, tmp_path / "out", store)

    assert [(f.path, f.digest) for f in manifest.files] == [("log.txt", sha(b"epoch 2\n"))]
    assert store.exists(sha(b"epoch 2\n"))
    assert not store.exists(sha(b"epoch 1\n"))


def test_stat_cache_lets_unchanged_files_be_copied_without_rehashing(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    write_tree(tmp_path / "out", TREE, mtime_ns=OLD_NS)
    cache = StatCache(None)
    manifest = scan(tmp_path / "out", "out", stat_cache=cache)

    push(manifest, tmp_path / "out", store, stat_cache=cache)

    for data in TREE.values():
        assert b"".join(store.open(sha(data))) == data


def test_move_adopts_files_read_only_and_unlinked(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    write_tree(tmp_path / "out", {"model.bin": b"weights", "twin": b"twin"}, mtime_ns=OLD_NS)
    os.link(tmp_path / "out" / "twin", tmp_path / "out" / "twin-link")  # a job's hard link
    cache = StatCache(None)
    manifest = scan(tmp_path / "out", "out", stat_cache=cache)

    push(manifest, tmp_path / "out", store, move=True, stat_cache=cache)

    for data in (b"weights", b"twin"):
        blob = store.path(sha(data))
        st = blob.stat()
        assert stat.S_IMODE(st.st_mode) == 0o400
        assert st.st_nlink == 1  # nothing in the job's folder shares the stored inode
        assert blob.read_bytes() == data
    assert not (tmp_path / "out" / "model.bin").exists()
    assert (tmp_path / "out" / "twin-link").read_bytes() == b"twin"


def test_adopt_of_a_file_that_does_not_match_puts_it_back(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    (tmp_path / "f").write_bytes(b"actual")

    with pytest.raises(StorageError, match="does not match"):
        store.adopt(tmp_path / "f", sha(b"claimed"))

    assert (tmp_path / "f").read_bytes() == b"actual"
    assert list(store.list_digests()) == []


def test_placed_files_are_copies_never_links_to_blobs(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    write_tree(tmp_path / "out", {"data.csv": b"1,2\n"})
    manifest = scanned(tmp_path / "out")
    push(manifest, tmp_path / "out", store)

    place(manifest, tmp_path / "job" / "out", store)
    (tmp_path / "job" / "out" / "data.csv").write_bytes(b"job wrote this")

    assert store.path(sha(b"1,2\n")).stat().st_nlink == 1
    assert b"".join(store.open(sha(b"1,2\n"))) == b"1,2\n"


def test_place_detects_a_corrupt_blob_and_names_it(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    write_tree(tmp_path / "out", {"good": b"good", "bad": b"bad!"})
    manifest = scanned(tmp_path / "out")
    push(manifest, tmp_path / "out", store)
    blob = store.path(sha(b"bad!"))
    blob.chmod(0o644)
    blob.write_bytes(b"bad?")  # one byte flipped on disk

    with pytest.raises(StorageError, match=sha(b"bad!")):
        place(manifest, tmp_path / "job", store, workers=1)

    assert not (tmp_path / "job" / "bad").exists()
    assert [p.name for p in (tmp_path / "job").iterdir() if p.name.startswith(".")] == []


def test_place_leaves_identical_files_alone_and_replaces_others(tmp_path: Path) -> None:
    store = MemoryBlobStore()
    write_tree(tmp_path / "out", {"same": b"same", "other": b"new"})
    manifest = scanned(tmp_path / "out")
    push(manifest, tmp_path / "out", store)
    write_tree(tmp_path / "job", {"same": b"same", "other": b"old"})

    stats = place(manifest, tmp_path / "job", store)

    assert (stats.files, stats.skipped_files) == (1, 1)
    assert (tmp_path / "job" / "other").read_bytes() == b"new"


def test_place_single_file_artifact(tmp_path: Path) -> None:
    store = MemoryBlobStore()
    (tmp_path / "model.pt").write_bytes(b"w")
    manifest = scan(tmp_path / "model.pt", "model.pt")
    push(manifest, tmp_path / "model.pt", store)

    place(manifest, tmp_path / "job" / "model.pt", store)

    assert (tmp_path / "job" / "model.pt").read_bytes() == b"w"


def test_place_refuses_entries_that_escape_the_target(tmp_path: Path) -> None:
    store = MemoryBlobStore()
    store.put_bytes(b"x", sha(b"x"))
    # Built without validation, as a manifest assembled in memory would be.
    entry = FileEntry.model_construct(path="../x", size=1, mode=0o644, digest=sha(b"x"))
    evil = Manifest.model_construct(path="out", files=[entry])

    with pytest.raises(StorageError, match="would leave its artifact folder"):
        place(evil, tmp_path / "job", store)

    assert not (tmp_path / "x").exists()


def test_many_small_files(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    files = {f"d{i % 20}/f{i}.txt": f"file {i}\n".encode() * 100 for i in range(2000)}
    write_tree(tmp_path / "out", files)
    manifest = scanned(tmp_path / "out")

    stats = push(manifest, tmp_path / "out", store)
    place(manifest, tmp_path / "copy", store)

    assert stats.files == 2000
    assert all((tmp_path / "copy" / rel).read_bytes() == data for rel, data in files.items())


def test_one_large_file(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    big = tmp_path / "out" / "big.bin"
    big.parent.mkdir()
    chunk = os.urandom(1024 * 1024)
    with big.open("wb") as file:
        for i in range(200):
            file.write(chunk[i:] + chunk[:i])
    manifest = scanned(tmp_path / "out")

    push(manifest, tmp_path / "out", store, move=True)
    place(manifest, tmp_path / "copy", store)

    assert not big.exists()
    assert sha((tmp_path / "copy" / "big.bin").read_bytes()) == manifest.files[0].digest
