"""read_repo_state / find_repo_root against real git repositories."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from dstack.errors import RepoError
from dstack.repo import EMPTY_TREE, RepoState, find_repo_root, read_repo_state
from dstack.repo.state import probe_repo

from .conftest import Git


def changed_paths(state: RepoState) -> list[str]:
    """Paths the recorded diff touches, from its `diff --git a/X b/X` headers."""
    return [
        line.split(" b/", 1)[1]
        for line in state.diff.decode(errors="replace").splitlines()
        if line.startswith("diff --git ")
    ]


def test_clean_repo_records_commit_branch_and_empty_diff(repo: Path, git: Git) -> None:
    state = read_repo_state(repo)

    assert state.root == repo.resolve()
    assert state.commit == git(repo, "rev-parse", "HEAD").strip()
    assert state.branch == "main"
    assert state.tree == git(repo, "rev-parse", "HEAD^{tree}").strip()
    assert state.diff == b""


def test_modified_file_changes_tree_and_shows_in_diff(repo: Path) -> None:
    clean = read_repo_state(repo)
    (repo / "src" / "train.py").write_text("print('train harder')\n")

    state = read_repo_state(repo)

    assert state.tree != clean.tree
    assert changed_paths(state) == ["src/train.py"]
    assert b"+print('train harder')" in state.diff


def test_untracked_file_is_part_of_the_tree(repo: Path) -> None:
    (repo / "notes.txt").write_text("remember\n")

    state = read_repo_state(repo)

    assert changed_paths(state) == ["notes.txt"]
    assert b"new file mode 100644" in state.diff


def test_ignored_files_are_excluded(repo: Path) -> None:
    clean = read_repo_state(repo)
    (repo / "train.log").write_text("loss=1\n")
    (repo / "cache").mkdir()
    (repo / "cache" / "blob").write_bytes(b"\0" * 100)

    state = read_repo_state(repo)

    assert state.tree == clean.tree
    assert state.diff == b""


def test_binary_file_change_is_a_binary_patch(repo: Path) -> None:
    (repo / "data.bin").write_bytes(bytes(reversed(range(256))) * 4)
    (repo / "new.bin").write_bytes(b"\x00\xff\x10" * 50)

    state = read_repo_state(repo)

    assert changed_paths(state) == ["data.bin", "new.bin"]
    assert state.diff.count(b"GIT binary patch") == 2


def test_deleted_file_shows_as_deletion(repo: Path) -> None:
    (repo / "README.md").unlink()

    state = read_repo_state(repo)

    assert changed_paths(state) == ["README.md"]
    assert b"deleted file mode 100644" in state.diff


def test_executable_bit_change_is_recorded(repo: Path) -> None:
    (repo / "src" / "train.py").chmod(0o755)

    state = read_repo_state(repo)

    assert b"old mode 100644\nnew mode 100755" in state.diff


def test_no_remote_gives_a_local_id_stable_for_the_path(repo: Path) -> None:
    first = read_repo_state(repo)
    second = read_repo_state(repo / "src")

    assert first.remote_url is None
    assert first.repo_id.startswith("local:")
    assert second.repo_id == first.repo_id


def test_ssh_and_https_remotes_give_the_same_id(repo: Path, git: Git) -> None:
    git(repo, "remote", "add", "origin", "git@github.com:acme/models.git")
    via_ssh = read_repo_state(repo)
    git(repo, "remote", "set-url", "origin", "https://oauth2:s3cret@github.com/acme/models")
    via_https = read_repo_state(repo)

    assert via_ssh.repo_id == via_https.repo_id == "github.com/acme/models"
    assert via_ssh.remote_url == "git@github.com:acme/models.git"
    assert via_https.remote_url == "https://github.com/acme/models"  # no token recorded


def test_repo_without_commits_diffs_against_the_empty_tree(empty_repo: Path, git: Git) -> None:
    (empty_repo / "a.txt").write_text("a\n")

    state = read_repo_state(empty_repo)

    assert state.commit is None
    assert state.branch == "main"
    assert changed_paths(state) == ["a.txt"]
    assert git(empty_repo, "ls-tree", "--name-only", state.tree).split() == ["a.txt"]


def test_empty_repo_without_files_has_the_empty_tree(empty_repo: Path) -> None:
    state = read_repo_state(empty_repo)

    assert state.tree == EMPTY_TREE
    assert state.diff == b""


def test_detached_head_has_no_branch(repo: Path, git: Git) -> None:
    (repo / "README.md").write_text("# second\n")
    git(repo, "commit", "-qam", "second")
    first = git(repo, "rev-parse", "HEAD~1").strip()
    git(repo, "checkout", "-q", "--detach", first)

    state = read_repo_state(repo)

    assert state.branch is None
    assert state.commit == first
    assert state.diff == b""


def test_tree_changes_iff_content_changes(repo: Path) -> None:
    path = repo / "src" / "util.py"
    original = read_repo_state(repo).tree

    path.write_text("X = 1\n")  # same content, new mtime
    assert read_repo_state(repo).tree == original
    path.write_text("X = 2\n")
    edited = read_repo_state(repo).tree
    path.write_text("X = 1\n")

    assert edited != original
    assert read_repo_state(repo).tree == original


def test_staged_changes_count_like_unstaged_ones(repo: Path, git: Git) -> None:
    (repo / "src" / "util.py").write_text("X = 2\n")
    unstaged = read_repo_state(repo)
    git(repo, "add", "src/util.py")

    staged = read_repo_state(repo)

    assert staged.tree == unstaged.tree
    assert staged.diff == unstaged.diff


def test_user_index_and_status_are_untouched(repo: Path, git: Git) -> None:
    (repo / "src" / "util.py").write_text("X = 2\n")
    git(repo, "add", "src/util.py")
    (repo / "README.md").write_text("# changed, unstaged\n")
    (repo / "untracked.txt").write_text("u\n")
    index = repo / ".git" / "index"
    status_before = git(repo, "status", "--porcelain")
    index_before = index.read_bytes()

    read_repo_state(repo)

    assert git(repo, "status", "--porcelain") == status_before
    assert index.read_bytes() == index_before


def test_thousands_of_files(repo: Path, git: Git) -> None:
    for d in range(30):
        folder = repo / "many" / f"d{d}"
        folder.mkdir(parents=True)
        for f in range(100):
            (folder / f"f{f}.txt").write_text(f"{d}-{f}\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "many files")
    (repo / "many" / "d7" / "f7.txt").write_text("changed\n")

    state = read_repo_state(repo)

    assert changed_paths(state) == ["many/d7/f7.txt"]


def test_find_repo_root_from_a_subfolder(repo: Path) -> None:
    assert find_repo_root(repo / "src") == repo.resolve()


def test_probe_from_a_subfolder_tells_what_separate_questions_do(repo: Path, git: Git) -> None:
    probe = probe_repo(repo / "src")

    assert probe.root == find_repo_root(repo / "src")
    assert probe.commit == git(repo, "rev-parse", "HEAD").strip()
    assert probe.head_tree == git(repo, "rev-parse", "HEAD^{tree}").strip()
    assert probe.branch == git(repo, "symbolic-ref", "--short", "HEAD").strip()
    assert probe.index == repo.resolve() / ".git" / "index"
    assert read_repo_state(repo / "src", probe=probe) == read_repo_state(repo)


def test_probe_of_a_repository_without_commits_names_its_unborn_branch(
    empty_repo: Path, git: Git
) -> None:
    probe = probe_repo(empty_repo)

    assert (probe.root, probe.commit, probe.head_tree) == (empty_repo.resolve(), None, None)
    assert probe.branch == git(empty_repo, "symbolic-ref", "--short", "HEAD").strip()


@pytest.mark.parametrize("ask", [find_repo_root, probe_repo, read_repo_state])
def test_outside_a_repository_is_a_clear_error(
    ask: Callable[[Path], object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    # In case the temporary folder itself lies inside some git working copy.
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))

    with pytest.raises(RepoError, match="is not inside a git repository") as info:
        ask(plain)

    assert info.value.hint is not None
    assert "git init" in info.value.hint


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RepoError, match="does not exist"):
        read_repo_state(tmp_path / "nowhere")


def test_missing_git_is_a_clear_error(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(repo / "no-bin-here"))

    with pytest.raises(RepoError, match="git is not installed") as info:
        read_repo_state(repo)

    assert info.value.hint is not None
