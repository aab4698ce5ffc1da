"""Real git repositories in temporary folders, isolated from the machine's git configuration."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

Git = Callable[..., str]


@pytest.fixture(autouse=True)
def _isolated_git(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Same author, no global or system config: results do not depend on the machine."""
    home = tmp_path_factory.mktemp("git-home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / ".gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for var in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{var}_NAME", "Test User")
        monkeypatch.setenv(f"GIT_{var}_EMAIL", "test@example.com")
        monkeypatch.setenv(f"GIT_{var}_DATE", "2023-01-01T00:00:00+00:00")
    for var in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        monkeypatch.delenv(var, raising=False)


def run_git_bytes(cwd: Path, *args: str) -> bytes:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, check=True).stdout


def run_git(cwd: Path, *args: str) -> str:
    return run_git_bytes(cwd, *args).decode()


@pytest.fixture
def git() -> Git:
    """``git(repo, *args)`` -> stdout; fails the test when git fails."""
    return run_git


@pytest.fixture
def empty_repo(tmp_path: Path) -> Path:
    """A fresh repository on branch main, with no commit."""
    root = tmp_path / "project"
    root.mkdir()
    run_git(root, "init", "-q", "-b", "main")
    return root


@pytest.fixture
def repo(empty_repo: Path) -> Path:
    """A repository with one commit: text, binary, executable and ignored files."""
    root = empty_repo
    (root / "src").mkdir()
    (root / "src" / "train.py").write_text("print('train')\n")
    (root / "src" / "util.py").write_text("X = 1\n")
    (root / "README.md").write_text("# project\n")
    (root / "data.bin").write_bytes(bytes(range(256)) * 4)
    (root / "run.sh").write_text("#!/bin/sh\necho run\n")
    (root / "run.sh").chmod(0o755)
    (root / ".gitignore").write_text("*.log\ncache/\n")
    run_git(root, "add", "-A")
    run_git(root, "commit", "-q", "-m", "initial")
    return root
