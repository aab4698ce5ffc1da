"""Copying bytes while hashing them: one pass over the source, the hash on a second core.

Hashing (`dstack.models.digests`), file reads/writes and `copy_file_range` all release the
GIL, so a helper thread can do one half of the work while the caller does the other: a copy
costs about the slower of one hash pass and one copy of wall time. Small files are done
inline: a thread would cost more than the hash.

- `copy_hashing`: the source may change while it is read (a job's file). The kernel copies
  it (`copy_file_range`) into the caller's new file in windows, and a helper thread hashes
  each finished window of that copy, so the digest is exactly that of the bytes stored.
  Only that copy is memory-mapped (it is ours: nobody truncates it under the map, which
  would kill the process with SIGBUS); a job's file is only ever read. Where the kernel
  cannot copy (another filesystem), the source is read once into reused buffers instead.
- `copy_verified`: the source does not change (a stored blob): the kernel copies it while
  this thread hashes the source through a memory map.
"""

from __future__ import annotations

import errno
import mmap
import os
import queue
import threading

from dstack.models.digests import Hasher, digest_bytes, digest_fd, new_hasher
from dstack.storage.base import CHUNK_SIZE

_BUFFERS = 8
_Slot = tuple[int, int]  # buffer index, bytes in it
WINDOW = 64 * 1024 * 1024
"""Bytes the kernel copies before the hashing thread takes them (a multiple of the page)."""
# What `copy_file_range` raises where it cannot copy between these two files.
_NO_KERNEL_COPY = {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF}


def copy_hashing(source_fd: int, out_fd: int) -> tuple[str, int]:
    """Copy `source_fd` (from its offset) to `out_fd` (a new, empty file open for reading and
    writing) to the end; (hex digest of what was written, bytes)."""
    first = os.read(source_fd, CHUNK_SIZE)
    if len(first) < CHUNK_SIZE:
        _write_all(out_fd, first)
        return digest_bytes(first), len(first)
    hasher = new_hasher(os.fstat(source_fd).st_size)
    hasher.update(first)
    _write_all(out_fd, first)
    rest = _kernel_copy(source_fd, out_fd, hasher, len(first))
    if rest is None:
        rest = _ring_copy(source_fd, out_fd, hasher)
    return hasher.hexdigest(), len(first) + rest


def _kernel_copy(source_fd: int, out_fd: int, hasher: Hasher, start: int) -> int | None:
    """Copy the rest of the source in the kernel, window by window, while a helper thread
    hashes each window of `out_fd` once it is complete; the bytes copied, or None when the
    kernel cannot copy between these files (nothing was copied then)."""
    windows: queue.SimpleQueue[_Slot | None] = queue.SimpleQueue()
    errors: list[BaseException] = []
    thread = threading.Thread(
        target=_hash_windows, args=(out_fd, hasher, windows, errors), daemon=True
    )
    offset = start
    try:
        while True:
            copied = _copy_window(source_fd, out_fd, started=thread.is_alive())
            if copied is None:
                return None
            if not thread.is_alive():
                thread.start()
            if copied:
                windows.put((offset, copied))
                offset += copied
            if copied < WINDOW or errors:
                break
    finally:
        windows.put(None)
        if thread.is_alive():
            thread.join()
    if errors:
        raise errors[0]
    return offset - start


def _copy_window(source_fd: int, out_fd: int, *, started: bool) -> int | None:
    """Copy up to `WINDOW` bytes at the files' offsets; bytes copied (fewer at the end of
    the source), None when the kernel cannot copy before anything was copied."""
    done = 0
    while done < WINDOW:
        try:
            copied = os.copy_file_range(source_fd, out_fd, WINDOW - done)
        except OSError as exc:
            if exc.errno in _NO_KERNEL_COPY and not started and not done:
                return None
            raise
        if copied == 0:
            break
        done += copied
    return done


def _hash_windows(
    fd: int,
    hasher: Hasher,
    windows: queue.SimpleQueue[_Slot | None],
    errors: list[BaseException],
) -> None:
    try:
        while (window := windows.get()) is not None:
            offset, count = window
            with (
                mmap.mmap(
                    fd,
                    count,
                    flags=mmap.MAP_SHARED | mmap.MAP_POPULATE,
                    prot=mmap.PROT_READ,
                    offset=offset,
                ) as mapped,
                memoryview(mapped) as view,
            ):
                hasher.update(view)
    except BaseException as exc:  # handed to the copying thread
        errors.append(exc)
        while windows.get() is not None:
            pass


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
        digest = hash_own_fd(source_fd)
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


def hash_own_fd(fd: int) -> str:
    """As `hash_fd`, for a file only this process may change (a stored blob, a copy of our
    own): hashed through a memory map, without copying it into buffers first."""
    size = os.fstat(fd).st_size
    if size < WINDOW:
        return digest_fd(fd)
    hasher = new_hasher(size)
    with (
        mmap.mmap(
            fd, size, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE, prot=mmap.PROT_READ
        ) as mapped,
        memoryview(mapped) as view,
    ):
        hasher.update(view)
    return hasher.hexdigest()


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
