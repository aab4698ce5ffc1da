"""Helpers for the artifact engine tests: writing trees of files, hashing bytes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from tests.infra.fixtures import moto_s3, s3_bucket

__all__ = ["moto_s3", "s3_bucket"]  # fixtures, shared with this folder's tests


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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
