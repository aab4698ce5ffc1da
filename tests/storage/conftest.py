"""Helpers for the storage tests: trees of files, hashing bytes, a served server, a presigner."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from tests.infra.fixtures import moto_s3, s3_bucket

from dstack.models.digests import digest_bytes
from dstack.server.app import create_app
from dstack.server.settings import ServerSettings
from dstack.storage import LocalBlobStore
from dstack.storage.s3 import S3BlobStore

__all__ = ["moto_s3", "s3_bucket"]  # fixtures, shared with this folder's tests


def sha(data: bytes) -> str:
    """The content digest of `data` (`dstack.models.digests`)."""
    return digest_bytes(data)


def write_tree(root: Path, files: dict[str, bytes], *, mtime_ns: int | None = None) -> None:
    """Create `files` (relative path → bytes) under `root`; with `mtime_ns`, stamp them so
    they are not "racily clean" (see `StatCache`)."""
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if mtime_ns is not None:
            os.utime(path, ns=(mtime_ns, mtime_ns))


OLD_NS = 1_600_000_000 * 10**9  # 2020: far from "now"


TOKEN = "blob-token"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, LocalBlobStore]]:
    """The real server app on a loopback port, over a fresh local store: (URL, store)."""
    blobs = LocalBlobStore(tmp_path / "server-blobs")
    app = create_app(ServerSettings(home=tmp_path / "home", token=TOKEN), blobs=blobs)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    served = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=served.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not served.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert served.started
    yield f"http://127.0.0.1:{port}", blobs
    served.should_exit = True
    thread.join(10)
    sock.close()


class StorePresigner:
    """Signs with the store itself, as the server does (a stand-in for its HTTP API)."""

    def __init__(self, store: S3BlobStore) -> None:
        self.store = store

    def presign(self, digests: list[str], method: str) -> dict[str, str]:
        return {d: self.store.presign(d, method) for d in digests}

    def missing(self, digests: list[str]) -> list[str]:
        return self.store.missing(digests)

    def close(self) -> None:
        """The store is the test's; nothing of its own to release."""
