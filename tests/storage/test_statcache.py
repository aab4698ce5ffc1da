"""`StatCache`: unchanged files are never read twice, changed ones always are."""

from __future__ import annotations

import json
import os
from pathlib import Path

from dstack.models.digests import ALGORITHM
from dstack.storage.base import hash_file
from dstack.storage.manifests import scan
from dstack.storage.statcache import StatCache

from .conftest import OLD_NS, sha, write_tree


class CountingHasher:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, path: Path | str) -> str:
        self.calls += 1
        return hash_file(path)


def test_second_scan_reads_nothing(tmp_path: Path) -> None:
    write_tree(
        tmp_path / "out", {f"d{i % 3}/f{i}": bytes([i]) * i for i in range(30)}, mtime_ns=OLD_NS
    )
    hasher = CountingHasher()
    cache = StatCache(None, hasher=hasher)

    first = scan(tmp_path / "out", "out", stat_cache=cache)
    second = scan(tmp_path / "out", "out", stat_cache=cache)

    assert hasher.calls == 30
    assert second == first


def test_same_size_and_mtime_returns_the_remembered_digest(tmp_path: Path) -> None:
    path = tmp_path / "f"
    write_tree(tmp_path, {"f": b"aaaa"}, mtime_ns=OLD_NS)
    cache = StatCache(tmp_path / "cache.json")
    assert cache.digest(path, path.stat()) == sha(b"aaaa")
    cache.save()

    # Rewritten in place (same inode), same size, mtime put back: only a re-read could tell.
    with path.open("r+b") as file:
        file.write(b"bbbb")
    os.utime(path, ns=(OLD_NS, OLD_NS))

    assert StatCache(tmp_path / "cache.json").digest(path, path.stat()) == sha(b"aaaa")


def test_changed_mtime_rehashes(tmp_path: Path) -> None:
    path = tmp_path / "f"
    write_tree(tmp_path, {"f": b"aaaa"}, mtime_ns=OLD_NS)
    cache = StatCache(None)
    cache.digest(path, path.stat())

    path.write_bytes(b"bbbb")
    os.utime(path, ns=(OLD_NS + 1, OLD_NS + 1))

    assert cache.digest(path, path.stat()) == sha(b"bbbb")


def test_racily_clean_files_are_not_trusted(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"fresh")  # mtime = now: a write in the same tick could go unseen
    hasher = CountingHasher()
    cache = StatCache(None, hasher=hasher)

    cache.digest(path, path.stat())
    cache.digest(path, path.stat())

    assert hasher.calls == 2


def test_corrupt_or_missing_file_is_an_empty_cache(tmp_path: Path) -> None:
    store = tmp_path / "cache.json"
    store.write_text("{not json")
    write_tree(tmp_path, {"f": b"x"}, mtime_ns=OLD_NS)
    hasher = CountingHasher()

    cache = StatCache(store, hasher=hasher)
    cache.digest(tmp_path / "f", (tmp_path / "f").stat())
    cache.save()
    StatCache(tmp_path / "absent.json").save()

    assert hasher.calls == 1
    assert StatCache(store).lookup(tmp_path / "f", (tmp_path / "f").stat()) == sha(b"x")
    assert not (tmp_path / "absent.json").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".statcache")] == []


def test_a_memo_of_another_algorithm_is_dropped(tmp_path: Path) -> None:
    """The memo file says which algorithm its digests are; an older file (no such field)
    holds sha256 digests. Digests of another algorithm than today's are never returned."""
    write_tree(tmp_path, {"f": b"x"}, mtime_ns=OLD_NS)
    memo = tmp_path / "cache.json"
    cache = StatCache(memo)
    cache.digest(tmp_path / "f", (tmp_path / "f").stat())
    cache.save()
    body = json.loads(memo.read_text())
    assert body["digest"] == ALGORITHM
    other = "sha256"

    memo.write_text(json.dumps({**body, "digest": other}))
    assert StatCache(memo).lookup(tmp_path / "f", (tmp_path / "f").stat()) is None
    del body["digest"]
    memo.write_text(json.dumps(body))
    found = StatCache(memo).lookup(tmp_path / "f", (tmp_path / "f").stat())
    assert found is None  # an older memo: sha256 digests, hashed again with BLAKE3
