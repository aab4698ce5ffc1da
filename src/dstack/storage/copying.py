"""Copying bytes while hashing them: one read, one write, the hash on a second core.

`hashlib` and file writes both release the GIL, so for large files a helper thread hashes
chunk *n* while the caller writes it; small files are done inline (a thread would cost more
than the hash).
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
from typing import BinaryIO

from dstack.storage.base import CHUNK_SIZE

_QUEUE_CHUNKS = 16


def copy_hashing(source: BinaryIO, out: BinaryIO) -> tuple[str, int]:
    """Copy `source` to `out` to the end; return (hex sha256, bytes copied)."""
    first = source.read(CHUNK_SIZE)
    if len(first) < CHUNK_SIZE:
        out.write(first)
        return hashlib.sha256(first).hexdigest(), len(first)
    hasher = hashlib.sha256()
    chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=_QUEUE_CHUNKS)
    thread = threading.Thread(target=_hash_chunks, args=(hasher, chunks), daemon=True)
    thread.start()
    total = 0
    try:
        chunk = first
        while chunk:
            chunks.put(chunk)
            out.write(chunk)
            total += len(chunk)
            chunk = source.read(CHUNK_SIZE)
    finally:
        chunks.put(None)
        thread.join()
    return hasher.hexdigest(), total


def _hash_chunks(hasher: hashlib._Hash, chunks: queue.Queue[bytes | None]) -> None:
    while (chunk := chunks.get()) is not None:
        hasher.update(chunk)


def copy_range(source_fd: int, out_fd: int, size: int) -> None:
    """Copy `size` bytes between two descriptors inside the kernel (no user-space buffers);
    falls back to read/write where `copy_file_range` is unsupported (other filesystems)."""
    offset = 0
    try:
        while offset < size:
            copied = os.copy_file_range(source_fd, out_fd, size - offset)
            if copied == 0:
                break
            offset += copied
    except OSError:
        os.lseek(source_fd, offset, os.SEEK_SET)
        os.lseek(out_fd, offset, os.SEEK_SET)
        while chunk := os.read(source_fd, CHUNK_SIZE):
            os.write(out_fd, chunk)
