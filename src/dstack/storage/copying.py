"""Copying bytes while hashing them: one pass over the source, the hash on a second core.

Hashing (`dstack.models.digests`), file reads/writes and `copy_file_range` all release the
GIL, so a helper thread can do one half of the work while the caller does the other: a copy
costs about the slower of one hash pass and one copy of wall time. Small files are done
inline: a thread would cost more than the hash.

- `copy_hashing`: the source may change while it is read (a job's file): the bytes hashed
  are exactly the bytes written, read once into reused buffers.
- `copy_verified`: the source does not change (a stored blob): the kernel copies it
  (`copy_file_range`, no user-space buffers) while this thread hashes it.
"""

from __future__ import annotations

import os
import queue
import threading

from dstack.models.digests import Hasher, digest_bytes, digest_fd, new_hasher
from dstack.storage.base import CHUNK_SIZE

_BUFFERS = 8
_Slot = tuple[int, int]  # buffer index, bytes in it


def copy_hashing(source_fd: int, out_fd: int) -> tuple[str, int]:
    """Copy `source_fd` (from its offset) to `out_fd` to the end; (hex digest, bytes)."""
    first = os.read(source_fd, CHUNK_SIZE)
    if len(first) < CHUNK_SIZE:
        _write_all(out_fd, first)
        return digest_bytes(first), len(first)
    hasher = new_hasher(os.fstat(source_fd).st_size)
    hasher.update(first)
    _write_all(out_fd, first)
    total = len(first) + _ring_copy(source_fd, out_fd, hasher)
    return hasher.hexdigest(), total


def _ring_copy(source_fd: int, out_fd: int, hasher: Hasher) -> int:
    """Read into a ring of reused buffers (no allocation, no page faults per chunk), write
    each, and hand it to a hashing thread that gives it back when done."""
    buffers = [bytearray(CHUNK_SIZE) for _ in range(_BUFFERS)]
    free: queue.SimpleQueue[int] = queue.SimpleQueue()
    full: queue.SimpleQueue[_Slot | None] = queue.SimpleQueue()
    for index in range(_BUFFERS):
        free.put(index)
    thread = threading.Thread(target=_hash_slots, args=(hasher, buffers, full, free), daemon=True)
    thread.start()
    total = 0
    try:
        while True:
            index = free.get()
            count = os.readv(source_fd, [buffers[index]])
            if count == 0:
                break
            _write_all(out_fd, memoryview(buffers[index])[:count])
            full.put((index, count))
            total += count
    finally:
        full.put(None)
        thread.join()
    return total


def _hash_slots(
    hasher: Hasher,
    buffers: list[bytearray],
    full: queue.SimpleQueue[_Slot | None],
    free: queue.SimpleQueue[int],
) -> None:
    while (slot := full.get()) is not None:
        index, count = slot
        hasher.update(memoryview(buffers[index])[:count])
        free.put(index)


def copy_verified(source_fd: int, out_fd: int, size: int) -> str:
    """Copy `size` bytes of an unchanging source in the kernel while hashing it here; the
    hex digest of the source. The caller compares it with the digest it expects."""
    if size < CHUNK_SIZE:
        data = os.pread(source_fd, size, 0)
        _write_all(out_fd, data)
        return digest_bytes(data)
    errors: list[BaseException] = []
    thread = threading.Thread(
        target=_copy_collecting, args=(source_fd, out_fd, size, errors), daemon=True
    )
    thread.start()
    try:
        digest = hash_fd(source_fd)
    finally:
        thread.join()
    if errors:
        raise errors[0]
    return digest


def _copy_collecting(source_fd: int, out_fd: int, size: int, errors: list[BaseException]) -> None:
    try:
        copy_range(source_fd, out_fd, size)
    except BaseException as exc:  # handed to the caller's thread
        errors.append(exc)


def hash_fd(fd: int) -> str:
    """The hex digest of a descriptor's content from offset 0 (positioned reads: the offset
    of `fd` is left to whoever else uses it)."""
    return digest_fd(fd)


def copy_range(source_fd: int, out_fd: int, size: int) -> None:
    """Copy `size` bytes from offset 0 of `source_fd` to `out_fd` inside the kernel (no
    user-space buffers); falls back to read/write where `copy_file_range` is unsupported
    (other filesystems)."""
    offset = 0
    try:
        while offset < size:
            copied = os.copy_file_range(source_fd, out_fd, size - offset, offset, offset)
            if copied == 0:
                break
            offset += copied
    except OSError:
        while chunk := os.pread(source_fd, CHUNK_SIZE, offset):
            os.pwrite(out_fd, chunk, offset)
            offset += len(chunk)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
