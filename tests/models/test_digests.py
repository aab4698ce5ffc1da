"""The content digest: known vectors pin each algorithm, and every way of hashing agrees."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import blake3
import pytest

from dstack.models import digests
from dstack.models.digests import Algorithm, digest_bytes, digest_fd, digest_file, new_hasher
from dstack.storage.copying import copy_hashing, copy_verified

# From the BLAKE3 reference test vectors (input byte i is i % 251), and FIPS 180-2 for sha256.
VECTORS: list[tuple[Algorithm, bytes, str]] = [
    ("blake3", b"", "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"),
    ("blake3", b"\x00", "2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213"),
    (
        "blake3",
        bytes(i % 251 for i in range(1024)),
        "42214739f095a406f3fc83deb889744ac00df831c10daa55189b5d121c855af7",
    ),
    ("blake3", b"abc", "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"),
    ("sha256", b"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
    ("sha256", b"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
]


def test_new_digests_are_blake3() -> None:
    """Blobs, manifests and cache keys are named by BLAKE3 (the reference vector of the
    empty input); sha256 names only what was stored before."""
    assert digests.ALGORITHM == "blake3"
    assert digests.LEGACY == "sha256"
    assert digest_bytes(b"") == "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"


@pytest.mark.parametrize(("algorithm", "data", "expected"), VECTORS)
def test_known_vectors(algorithm: Algorithm, data: bytes, expected: str) -> None:
    assert digest_bytes(data, algorithm) == expected


def test_every_way_of_hashing_agrees(tmp_path: Path) -> None:
    """Whole, incremental, threaded (above the threshold), from a file, from a descriptor,
    and while copying: one digest, in the default algorithm."""
    data = os.urandom(digests.THREADED_MIN + 3 * 1024 * 1024 + 17)
    expected = digest_bytes(data)
    pieces = new_hasher()
    for start in range(0, len(data), 1_000_003):
        pieces.update(data[start : start + 1_000_003])
    threaded = new_hasher(len(data))
    threaded.update(data)
    source = tmp_path / "big"
    source.write_bytes(data)
    assert pieces.hexdigest() == threaded.hexdigest() == expected
    assert digest_file(source) == expected
    fd = os.open(source, os.O_RDONLY)
    out = os.open(tmp_path / "copy", os.O_RDWR | os.O_CREAT)
    out2 = os.open(tmp_path / "copy2", os.O_WRONLY | os.O_CREAT)
    try:
        assert digest_fd(fd) == expected
        assert copy_hashing(fd, out) == (expected, len(data))
        assert copy_verified(fd, out2, len(data)) == expected
    finally:
        for each in (fd, out, out2):
            os.close(each)
    assert (tmp_path / "copy").read_bytes() == (tmp_path / "copy2").read_bytes() == data


@pytest.mark.parametrize("algorithm", ["blake3", "sha256"])
def test_a_large_input_hashes_as_on_one_thread(algorithm: Algorithm) -> None:
    data = os.urandom(digests.THREADED_MIN + 1)
    h = new_hasher(len(data), algorithm)
    h.update(data)
    if algorithm == "blake3":
        reference = blake3.blake3(data, max_threads=1).hexdigest()
    else:
        reference = hashlib.sha256(data).hexdigest()
    assert h.hexdigest() == reference


def test_unknown_algorithm_is_refused() -> None:
    with pytest.raises(ValueError, match="md5"):
        new_hasher(0, "md5")  # type: ignore[arg-type]


def test_a_copy_where_the_kernel_cannot_copy_reads_the_source_instead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another filesystem (EXDEV): the same bytes and digest, through the read/write path."""

    def refuse(*args: object) -> int:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "copy_file_range", refuse)
    data = os.urandom(5 * 1024 * 1024 + 1)
    (tmp_path / "src").write_bytes(data)
    fd = os.open(tmp_path / "src", os.O_RDONLY)
    out = os.open(tmp_path / "copy", os.O_RDWR | os.O_CREAT)
    try:
        assert copy_hashing(fd, out) == (digest_bytes(data), len(data))
    finally:
        os.close(fd)
        os.close(out)
    assert (tmp_path / "copy").read_bytes() == data
