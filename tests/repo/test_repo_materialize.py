"""create_bundle + materialize reproduce exactly the recorded tree."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from dstack.errors import RepoError
from dstack.repo import RepoState, create_bundle, materialize, read_repo_state

from .conftest import Git, run_git_bytes


def files_on_disk(root: Path) -> dict[str, tuple[bytes, bool]]:
    """path -> (content, executable) for every file under ``root`` outside ``.git``.

    A symbolic link's content is where it points, as git stores it.
    """
    found: dict[str, tuple[bytes, bool]] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".git"]
        for name in files:
            path = Path(folder) / name
            if path.is_symlink():
                entry = (os.fsencode(os.readlink(path)), False)
            else:
                entry = (path.read_bytes(), bool(path.stat().st_mode & stat.S_IXUSR))
            found[path.relative_to(root).as_posix()] = entry
    return found


def files_of_tree(state: RepoState, git: Git) -> dict[str, tuple[bytes, bool]]:
    """What the recorded tree holds, read back out of the source repository."""
    found: dict[str, tuple[bytes, bool]] = {}
    for entry in git(state.root, "ls-tree", "-r", "-z", state.tree).split("\0"):
        if entry:
            meta, path = entry.split("\t", 1)
            mode, _, obj = meta.split()
            found[path] = (run_git_bytes(state.root, "cat-file", "blob", obj), mode == "100755")
    return found


def rebuild(state: RepoState, tmp_path: Path, *, branch: bool = True) -> Path:
    bundle = diff = None
    if state.commit:
        bundle = tmp_path / "code.bundle"
        create_bundle(state.root, state.commit, bundle)
    if state.diff:
        diff = tmp_path / "code.diff"
        diff.write_bytes(state.diff)
    target = tmp_path / "job" / "workflow"
    materialize(
        target,
        commit=state.commit,
        bundle=bundle,
        diff=diff,
        branch=state.branch if branch else None,
        expected_tree=state.tree,
    )
    return target


def modify_everything(root: Path) -> None:
    (root / "src" / "train.py").write_text("print('changed')  \n\n")  # trailing whitespace kept
    (root / "README.md").unlink()
    (root / "data.bin").write_bytes(bytes(reversed(range(256))) * 8)
    (root / "new.bin").write_bytes(b"\x00\x01\xfe\xff" * 300)
    (root / "nested" / "deep").mkdir(parents=True)
    (root / "nested" / "deep" / "new.txt").write_text("no newline at end")
    (root / "src" / "util.py").chmod(0o755)
    (root / "run.sh").chmod(0o644)
    (root / "debug.log").write_text("ignored\n")
    (root / "my notes ü.txt").write_text("spaces and unicode in the name\n")
    (root / "latest").symlink_to("src/train.py")


Scenario = Callable[[Path, Git], None]


def _clean(root: Path, git: Git) -> None:
    pass


def _changed(root: Path, git: Git) -> None:
    modify_everything(root)


def _detached_with_changes(root: Path, git: Git) -> None:
    (root / "README.md").write_text("# second\n")
    git(root, "commit", "-qam", "second")
    git(root, "checkout", "-q", "--detach", "HEAD~1")
    modify_everything(root)


@pytest.mark.parametrize("scenario", [_clean, _changed, _detached_with_changes])
def test_bundle_and_diff_reproduce_the_working_copy(
    repo: Path, git: Git, tmp_path: Path, scenario: Scenario
) -> None:
    scenario(repo, git)
    state = read_repo_state(repo)

    target = rebuild(state, tmp_path)

    working_copy = files_on_disk(repo)
    working_copy.pop("debug.log", None)  # ignored: the job must not see it
    assert git(target, "write-tree").strip() == state.tree
    assert files_on_disk(target) == files_of_tree(state, git) == working_copy


def test_checkout_is_on_the_recorded_branch(repo: Path, git: Git, tmp_path: Path) -> None:
    state = read_repo_state(repo)

    target = rebuild(state, tmp_path)

    assert git(target, "rev-parse", "--abbrev-ref", "HEAD").strip() == "main"
    assert git(target, "rev-parse", "HEAD").strip() == state.commit


def test_repo_without_commits_is_rebuilt_from_the_diff_alone(
    empty_repo: Path, git: Git, tmp_path: Path
) -> None:
    (empty_repo / "main.py").write_text("print(1)\n")
    (empty_repo / "blob.bin").write_bytes(b"\x00\xff" * 64)
    state = read_repo_state(empty_repo)

    target = rebuild(state, tmp_path)

    assert files_on_disk(target) == files_of_tree(state, git)


def test_commit_is_fetched_from_the_remote_when_there_is_no_bundle(
    repo: Path, git: Git, tmp_path: Path
) -> None:
    remote = tmp_path / "remote.git"
    git(tmp_path, "clone", "-q", "--bare", str(repo), str(remote))
    modify_everything(repo)
    state = read_repo_state(repo)
    diff = tmp_path / "code.diff"
    diff.write_bytes(state.diff)
    target = tmp_path / "from-remote"

    materialize(
        target,
        commit=state.commit,
        bundle=None,
        diff=diff,
        remote_url=str(remote),
        expected_tree=state.tree,
    )

    assert files_on_disk(target) == files_of_tree(state, git)


def test_bundle_leaves_the_users_refs_alone(repo: Path, git: Git, tmp_path: Path) -> None:
    refs_before = git(repo, "for-each-ref")
    commit = git(repo, "rev-parse", "HEAD").strip()

    create_bundle(repo, commit, tmp_path / "b.bundle")

    assert git(repo, "for-each-ref") == refs_before
    assert "refs/dstack/commit" in git(tmp_path, "bundle", "list-heads", "b.bundle")


def test_bundle_of_an_unknown_commit_is_a_clear_error(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(RepoError, match="is not in the repository"):
        create_bundle(repo, "0" * 40, tmp_path / "b.bundle")


def test_target_that_is_not_empty_is_refused(repo: Path, tmp_path: Path) -> None:
    state = read_repo_state(repo)
    target = tmp_path / "busy"
    target.mkdir()
    (target / "leftover").write_text("x")

    with pytest.raises(RepoError, match="not an empty folder"):
        materialize(target, commit=state.commit, bundle=None, diff=None)


def test_commit_without_bundle_or_remote_is_a_clear_error(repo: Path, tmp_path: Path) -> None:
    state = read_repo_state(repo)

    with pytest.raises(RepoError, match="neither a bundle nor a remote URL"):
        materialize(tmp_path / "t", commit=state.commit, bundle=None, diff=None)


def test_bundle_without_the_commit_is_a_clear_error(repo: Path, git: Git, tmp_path: Path) -> None:
    old = git(repo, "rev-parse", "HEAD").strip()
    create_bundle(repo, old, tmp_path / "old.bundle")
    (repo / "README.md").write_text("# newer\n")
    git(repo, "commit", "-qam", "newer")
    newer = git(repo, "rev-parse", "HEAD").strip()

    with pytest.raises(RepoError, match="does not contain commit"):
        materialize(tmp_path / "t", commit=newer, bundle=tmp_path / "old.bundle", diff=None)


def test_broken_bundle_is_a_clear_error(repo: Path, tmp_path: Path) -> None:
    state = read_repo_state(repo)
    bogus = tmp_path / "bogus.bundle"
    bogus.write_bytes(b"not a bundle")

    with pytest.raises(RepoError, match="cannot fetch commit") as info:
        materialize(tmp_path / "t", commit=state.commit, bundle=bogus, diff=None)

    assert "\n" not in info.value.message


def test_diff_that_does_not_apply_is_a_clear_error(repo: Path, git: Git, tmp_path: Path) -> None:
    (repo / "README.md").write_text("# edited\n")
    state = read_repo_state(repo)
    create_bundle(repo, state.commit or "", tmp_path / "b.bundle")
    wrong = tmp_path / "wrong.diff"
    wrong.write_bytes(state.diff.replace(b"-# project", b"-# something else"))

    with pytest.raises(RepoError, match="do not apply on commit"):
        materialize(tmp_path / "t", commit=state.commit, bundle=tmp_path / "b.bundle", diff=wrong)


def test_tree_mismatch_is_detected(repo: Path, tmp_path: Path) -> None:
    state = read_repo_state(repo)
    create_bundle(repo, state.commit or "", tmp_path / "b.bundle")

    with pytest.raises(RepoError, match="not the recorded"):
        materialize(
            tmp_path / "t",
            commit=state.commit,
            bundle=tmp_path / "b.bundle",
            diff=None,
            expected_tree="4b825dc642cb6eb9a060e54bf8d69288fbee4904",
        )


def test_linked_worktree_round_trips(repo: Path, git: Git, tmp_path: Path) -> None:
    worktree = tmp_path / "second-checkout"
    git(repo, "worktree", "add", "-q", "-b", "feature", str(worktree))
    (worktree / "feature.py").write_text("FEATURE = True\n")
    state = read_repo_state(worktree)

    target = rebuild(state, tmp_path)

    assert state.branch == "feature"
    assert files_on_disk(target) == files_of_tree(state, git)
    assert "feature.py" in files_on_disk(target)


def test_missing_diff_file_is_a_clear_error(empty_repo: Path, tmp_path: Path) -> None:
    with pytest.raises(RepoError, match="cannot read the recorded local changes"):
        materialize(tmp_path / "t", commit=None, bundle=None, diff=tmp_path / "gone.diff")
