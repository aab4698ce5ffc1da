"""`CheckoutCache`: a runner checks a tree out once and copies it for the next jobs."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.runner.conftest import FakeRunnerApi, git

from dstack.models.repo import RepoRef
from dstack.runner.checkouts import CheckoutCache, checkout_key
from dstack.runner.code import fetch_code


def _fetch(fake_api: FakeRunnerApi, repo: RepoRef, job_dir: Path, cache: CheckoutCache) -> Path:
    job_dir.mkdir(parents=True)
    if fake_api.runner_id is None:
        fake_api.registered()
    return fetch_code(fake_api, repo, job_dir, checkouts=cache)


def test_a_second_job_of_the_same_code_gets_a_copy_of_its_own(
    tmp_path: Path, fake_api: FakeRunnerApi, repo_ref: RepoRef
) -> None:
    cache = CheckoutCache(tmp_path / "checkouts")
    first = _fetch(fake_api, repo_ref, tmp_path / "jobs" / "a", cache)
    assert cache.has(repo_ref)
    fake_api.clear_blobs()  # a copy needs no blob

    second = _fetch(fake_api, repo_ref, tmp_path / "jobs" / "b", cache)

    assert (second / "train.sh").read_text() == (first / "train.sh").read_text()
    assert git(second, "rev-parse", "HEAD") == repo_ref.commit
    assert git(second, "status", "--porcelain") == ""
    assert git(second, "write-tree") == repo_ref.tree
    # The job may change its code: working files and the index are copies, not links ...
    assert os.stat(second / "train.sh").st_ino != os.stat(first / "train.sh").st_ino
    (second / "train.sh").write_text("changed\n")
    assert (first / "train.sh").read_text() != "changed\n"
    # ... while git's objects, which never change, are shared.
    packs = sorted((second / ".git" / "objects").rglob("*.pack"))
    assert packs
    assert all(p.stat().st_nlink > 1 for p in packs)
    # git's sample hooks, which nothing runs, are not copied for every job
    assert list((first / ".git").rglob("*.sample"))
    assert not list((second / ".git").rglob("*.sample"))


def test_other_code_is_checked_out_anew(
    tmp_path: Path, fake_api: FakeRunnerApi, repo_ref: RepoRef
) -> None:
    cache = CheckoutCache(tmp_path / "checkouts")
    _fetch(fake_api, repo_ref, tmp_path / "jobs" / "a", cache)
    other = repo_ref.model_copy(update={"branch": "feature"})
    assert checkout_key(other) != checkout_key(repo_ref)
    assert not cache.has(other)
    # Where the code is used does not make it other code.
    assert cache.has(repo_ref.model_copy(update={"subdir": "sub", "repo_id": "elsewhere"}))

    code = _fetch(fake_api, other, tmp_path / "jobs" / "b", cache)

    assert git(code, "rev-parse", "--abbrev-ref", "HEAD") == "feature"
    assert cache.has(other)


def test_only_the_most_recently_used_checkouts_are_kept(
    tmp_path: Path, fake_api: FakeRunnerApi, repo_ref: RepoRef
) -> None:
    cache = CheckoutCache(tmp_path / "checkouts", keep=2)
    refs = [repo_ref.model_copy(update={"branch": f"b{i}"}) for i in range(3)]
    for i, ref in enumerate(refs[:2]):
        _fetch(fake_api, ref, tmp_path / "jobs" / str(i), cache)
        os.utime(tmp_path / "checkouts" / checkout_key(ref), (i, i))
    assert cache.copy_to(refs[0], tmp_path / "jobs" / "again")  # used: now the newest

    _fetch(fake_api, refs[2], tmp_path / "jobs" / "2", cache)

    assert [cache.has(ref) for ref in refs] == [True, False, True]
    assert sorted(os.listdir(tmp_path / "checkouts")) == sorted(
        checkout_key(ref) for ref in (refs[0], refs[2])
    )


def test_no_cache_when_none_is_kept(
    tmp_path: Path, fake_api: FakeRunnerApi, repo_ref: RepoRef
) -> None:
    cache = CheckoutCache(tmp_path / "checkouts", keep=0)
    _fetch(fake_api, repo_ref, tmp_path / "jobs" / "a", cache)
    assert not cache.has(repo_ref)


def test_a_spare_copy_made_ahead_is_taken_whole_by_the_next_job(
    tmp_path: Path, fake_api: FakeRunnerApi, repo_ref: RepoRef
) -> None:
    spares = tmp_path / "jobs" / ".spares"
    cache = CheckoutCache(tmp_path / "checkouts", spares=spares)
    first = _fetch(fake_api, repo_ref, tmp_path / "jobs" / "a", cache)
    (first / "train.sh").write_text("changed by the first job\n")

    cache.prepare(repo_ref)
    spare = spares / checkout_key(repo_ref)
    deadline = time.monotonic() + 10
    second_spare = spares / f"{checkout_key(repo_ref)}.1"
    while not (spare.exists() and second_spare.exists()):
        assert time.monotonic() < deadline, "no spare copies were made"
        time.sleep(0.01)
    marker = spare.stat().st_ino
    second = _fetch(fake_api, repo_ref, tmp_path / "jobs" / "b", cache)

    assert second.stat().st_ino == marker  # moved, not copied again
    assert not spare.exists()
    # A second copy was made ahead too: the job after it (another slot) takes that one.
    marker = second_spare.stat().st_ino
    third = _fetch(fake_api, repo_ref, tmp_path / "jobs" / "c", cache)
    assert third.stat().st_ino == marker
    assert not second_spare.exists()
    assert git(third, "status", "--porcelain") == ""
    assert (second / "train.sh").read_text() == "echo training on $(cat data/in.txt)\n"
    assert git(second, "status", "--porcelain") == ""
    assert sorted(os.listdir(tmp_path / "checkouts")) == [checkout_key(repo_ref)]
    assert spares.stat().st_mode & 0o777 == 0o700  # no job may look into the spares
