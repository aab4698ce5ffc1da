"""`MemoryBlobStore`: the in-memory twin of the blob store, for tests."""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from dstack.errors import NotFoundError
from dstack.storage.base import CHUNK_SIZE, check_digest, verify_bytes


class MemoryBlobStore:
    """Blobs in a dict. Thread-safe; contents vanish with the object."""

    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def exists(self, digest: str) -> bool:
        with self._lock:
            return digest in self._blobs

    def missing(self, digests: list[str]) -> list[str]:
        """The distinct digests (in the order given) that are not stored."""
        with self._lock:
            return [d for d in dict.fromkeys(digests) if d not in self._blobs]

    def put_file(self, path: Path, digest: str) -> None:
        self.put_bytes(path.read_bytes(), digest)

    def put_bytes(self, data: bytes, digest: str) -> None:
        verify_bytes(data, check_digest(digest))
        with self._lock:
            self._blobs.setdefault(digest, bytes(data))

    def open(self, digest: str) -> Iterator[bytes]:
        data = self._get(digest)
        return (data[i : i + CHUNK_SIZE] for i in range(0, len(data), CHUNK_SIZE))

    def size(self, digest: str) -> int:
        return len(self._get(digest))

    def get_file(self, digest: str, target: Path) -> None:
        data = self._get(digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".dstack-")
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(tmp, target)

    def delete(self, digest: str) -> None:
        with self._lock:
            self._blobs.pop(digest, None)

    def list_digests(self) -> Iterator[str]:
        with self._lock:
            return iter(list(self._blobs))

    def close(self) -> None:
        """Nothing to release; the blobs stay until the object goes."""

    def _get(self, digest: str) -> bytes:
        with self._lock:
            data = self._blobs.get(digest)
        if data is None:
            raise NotFoundError(f"blob {digest} not found")
        return data
