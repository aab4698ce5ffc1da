"""`scan`: what an artifact path holds, as a manifest."""

from __future__ import annotations

import os
from pathlib import Path

from dstack.storage.manifests import scan

from .conftest import sha, write_tree


def test_nested_folder_sorted_with_sizes_modes_and_digests(tmp_path: Path) -> None:
    root = tmp_path / "model"
    write_tree(root, {"b.txt": b"bb", "a/deep/x.bin": b"\x00\x01", "a/c.txt": b""})
    (root / "a" / "deep" / "x.bin").chmod(0o755)

    manifest = scan(root, "model")

    assert manifest.path == "model"
    assert [(f.path, f.size, f.mode, f.digest) for f in manifest.files] == [
        ("a/c.txt", 0, 0o644, sha(b"")),
        ("a/deep/x.bin", 2, 0o755, sha(b"\x00\x01")),
        ("b.txt", 2, 0o644, sha(b"bb")),
    ]


def test_empty_folder_and_missing_path_have_no_files(tmp_path: Path) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)

    assert scan(tmp_path / "empty", "empty").files == []
    assert scan(tmp_path / "nope", "nope").files == []


def test_single_file_is_one_entry_with_empty_path(tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"weights")

    manifest = scan(tmp_path / "model.pt", "model.pt")

    assert [(f.path, f.digest) for f in manifest.files] == [("", sha(b"weights"))]


def test_unicode_names(tmp_path: Path) -> None:
    write_tree(tmp_path / "out", {"données/résumé ✓.txt": b"ok"})

    manifest = scan(tmp_path / "out", "out")

    assert [f.path for f in manifest.files] == ["données/résumé ✓.txt"]


def test_symlinks_inside_the_root_are_stored_as_content_others_are_skipped(
    tmp_path: Path,
) -> None:
    job = tmp_path / "job"
    write_tree(job, {"out/real.txt": b"real", "checkpoints/best.pt": b"best"})
    (tmp_path / "secret").write_bytes(b"host file")
    out = job / "out"
    os.symlink("real.txt", out / "alias.txt")
    os.symlink(job / "checkpoints" / "best.pt", out / "best.pt")
    os.symlink(tmp_path / "secret", out / "leak")
    os.symlink("gone", out / "dangling")
    os.symlink(job / "checkpoints", out / "folder-link")

    manifest = scan(out, "out", within=job)

    # best.pt points into the job's folder but out of the artifact: not followed either.
    assert [(f.path, f.digest) for f in manifest.files] == [
        ("alias.txt", sha(b"real")),
        ("real.txt", sha(b"real")),
    ]


def test_absolute_artifact_path_keeps_its_declared_name(tmp_path: Path) -> None:
    write_tree(tmp_path / "output", {"f": b"1"})

    manifest = scan(tmp_path / "output", "/output")

    assert manifest.path == "/output"
    assert [f.path for f in manifest.files] == ["f"]
