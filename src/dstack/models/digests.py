"""Content digests: the one place that knows how blobs, manifests and cache keys are hashed.

Every content address in dstack (a blob's name, a manifest's identity, a cache key) is a
256-bit digest written as 64 lower-case hex characters. `ALGORITHM` (BLAKE3) names the
algorithm of new digests; `new_hasher` gives an incremental hasher for it (or for
`sha256`/`blake3` by name), `digest_bytes`, `digest_file` and `digest_fd` the usual shortcuts.

BLAKE3 (the `blake3` package, its Rust core) hashes about twice as fast as sha256 on one
core, and can spread one large input over several threads: `new_hasher(size)` asks for that
when `size` is at least `THREADED_MIN`. Its updates release the GIL, as `hashlib`'s do, so a
helper thread can hash while another copies (`dstack.storage.copying`).

Digests written before the switch are sha256 (`LEGACY`), and stay valid: blobs keep their
names, manifests and database rows their digests, nothing is rewritten. Whoever verifies
content (`dstack.storage.base.verify`) compares its BLAKE3 digest first and, only when that
differs, the content's sha256: a second pass that only blobs stored before the switch (and
corrupt ones) pay. A digest is self-verifying under either algorithm (both are 256-bit and
collision resistant), so a store needs no record of which one named each blob, a half-done
migration cannot exist, and an older client that still sends sha256 digests keeps working.

Hashes of secrets (token hashes, session ids, key stretching) are not content digests and do
not use this module: they stay sha256.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Final, Literal, Protocol

Algorithm = Literal["sha256", "blake3"]

ALGORITHM: Final[Algorithm] = "blake3"
"""The algorithm of every new digest (README, "Artifacts")."""

LEGACY: Final[Algorithm] = "sha256"
"""The algorithm of digests written before BLAKE3; still accepted when content is verified."""

THREADED_MIN: Final = 64 * 1024 * 1024
"""Inputs of at least this many bytes are hashed by BLAKE3 on several threads."""

READ_SIZE: Final = 1024 * 1024


class Hasher(Protocol):
    """What `hashlib` hashers and `blake3.blake3` share."""

    def update(self, data: bytes | bytearray | memoryview, /) -> object: ...

    def hexdigest(self) -> str: ...


def new_hasher(size: int = 0, algorithm: Algorithm = ALGORITHM) -> Hasher:
    """A fresh incremental hasher; `size` (the expected input length, when known) picks
    several threads for a large input."""
    if algorithm == "blake3":
        import blake3  # a compiled module: cheap, loaded where content is hashed

        threads = blake3.blake3.AUTO if size >= THREADED_MIN else 1
        return blake3.blake3(max_threads=threads)
    if algorithm == "sha256":
        return hashlib.sha256()
    raise ValueError(f"unknown digest algorithm {algorithm!r}")


def digest_bytes(data: bytes | bytearray | memoryview, algorithm: Algorithm = ALGORITHM) -> str:
    """The hex digest of `data`."""
    h = new_hasher(len(data), algorithm)
    h.update(data)
    return h.hexdigest()


def digest_file(path: Path | str, algorithm: Algorithm = ALGORITHM) -> str:
    """The hex digest of a file, read in chunks into one reused buffer (unbuffered: most
    artifact files are small, and Python's buffered file objects cost more than the read)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return digest_fd(fd, algorithm)
    finally:
        os.close(fd)


def digest_fd(fd: int, algorithm: Algorithm = ALGORITHM) -> str:
    """The hex digest of a descriptor's content from offset 0 (positioned reads: the offset
    of `fd` is left to whoever else uses it)."""
    size = os.fstat(fd).st_size
    h = new_hasher(size, algorithm)
    offset = 0
    if size < READ_SIZE:  # most artifact files: one read of their size, no buffer to zero
        data = os.pread(fd, size + 1, 0)
        h.update(data)
        if len(data) <= size:
            return h.hexdigest()
        offset = len(data)  # it grew meanwhile: read on
    buffer = bytearray(READ_SIZE)
    view = memoryview(buffer)
    while count := os.preadv(fd, [buffer], offset):
        h.update(view[:count])
        offset += count
    return h.hexdigest()
