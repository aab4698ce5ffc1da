"""tree_of: a hash that moves only when a file matching the patterns changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from dstack.repo import read_repo_state, tree_of

from .conftest import Git

PATTERNS = ["src/**/*.py", "data/", "requirements.txt"]


@pytest.fixture
def project(repo: Path, git: Git) -> Path:
    (repo / "src" / "models").mkdir()
    (repo / "src" / "models" / "net.py").write_text("NET = 1\n")
    (repo / "src" / "notes.md").write_text("notes\n")
    (repo / "data").mkdir()
    (repo / "data" / "train.csv").write_text("a,b\n1,2\n")
    (repo / "requirements.txt").write_text("torch\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "project")
    return repo


@pytest.mark.parametrize(
    "path",
    ["src/train.py", "src/models/net.py", "data/train.csv", "requirements.txt"],
)
def test_hash_moves_when_a_matching_file_changes(project: Path, path: str) -> None:
    before = tree_of(project, patterns=PATTERNS)
    (project / path).write_text("changed\n")

    assert tree_of(project, patterns=PATTERNS) != before


@pytest.mark.parametrize("path", ["README.md", "src/notes.md", "run.sh", "other.py"])
def test_hash_stays_when_other_files_change(project: Path, path: str) -> None:
    before = tree_of(project, patterns=PATTERNS)
    (project / path).write_text("changed\n")

    assert tree_of(project, patterns=PATTERNS) == before


def test_ignored_files_never_count(project: Path) -> None:
    before = tree_of(project, patterns=["**/*.log", "data/"])
    (project / "data" / "run.log").write_text("noise\n")

    assert tree_of(project, patterns=["**/*.log", "data/"]) == before


def test_new_deleted_and_mode_changed_files_count(project: Path) -> None:
    hashes = {tree_of(project, patterns=PATTERNS)}
    (project / "data" / "extra.csv").write_text("x\n")
    hashes.add(tree_of(project, patterns=PATTERNS))
    (project / "data" / "train.csv").unlink()
    hashes.add(tree_of(project, patterns=PATTERNS))
    (project / "src" / "train.py").chmod(0o755)
    hashes.add(tree_of(project, patterns=PATTERNS))

    assert len(hashes) == 4


def test_same_files_give_the_same_hash_in_another_clone(
    project: Path, git: Git, tmp_path: Path
) -> None:
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(project), str(clone))

    assert tree_of(clone, patterns=PATTERNS) == tree_of(project, patterns=PATTERNS)


def test_precomputed_tree_gives_the_same_hash(project: Path) -> None:
    (project / "src" / "train.py").write_text("uncommitted\n")
    state = read_repo_state(project)

    assert tree_of(project, patterns=PATTERNS, tree=state.tree) == tree_of(
        project, patterns=PATTERNS
    )


def test_no_match_is_a_stable_empty_hash(project: Path) -> None:
    first = tree_of(project, patterns=["nothing/**"])
    (project / "README.md").write_text("changed\n")

    assert tree_of(project, patterns=["nothing/**"]) == first
    assert tree_of(project, patterns=[]) == first


def test_user_index_is_untouched(project: Path, git: Git) -> None:
    (project / "data" / "new.csv").write_text("n\n")
    status_before = git(project, "status", "--porcelain")

    tree_of(project, patterns=PATTERNS)

    assert git(project, "status", "--porcelain") == status_before
