from __future__ import annotations

import subprocess
from pathlib import Path

from dstack.repo.git import changed_paths, read_repo_state


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def test_changed_paths_names_the_files_between_two_recorded_trees(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q")
    for name in ("a.py", "b.py", "c.py"):
        (tmp_path / name).write_text("1\n")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "init")
    before = read_repo_state(tmp_path).tree
    (tmp_path / "b.py").write_text("2\n")
    (tmp_path / "new.py").write_text("new\n")
    after = read_repo_state(tmp_path).tree

    assert changed_paths(tmp_path, before, after) == "b.py, new.py"
    assert changed_paths(tmp_path, before, after, limit=1) == "b.py and 1 more"
    assert changed_paths(tmp_path, before, before) is None
    assert changed_paths(tmp_path, "ab" * 32, after) is None  # not a tree: a triggers hash
