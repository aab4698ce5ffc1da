"""A job's artifacts into a store on the runner's disk: stored while the job runs in the
read that hashes them, moved in at the end, counted once in the job's summary."""

from __future__ import annotations

from pathlib import Path

from tests.runner.artifact_helpers import assign, digest_of, files_of, running
from tests.runner.conftest import FakeRunnerApi

from dstack.models.job import JobStatus
from dstack.models.repo import RepoRef
from dstack.storage.local import LocalBlobStore

WAIT_FOR_GO = "while [ ! -f go ]; do sleep 0.05; done"


def _code_dir(tmp_path: Path) -> Path:
    return tmp_path / "runner" / "jobs" / "job-1" / "code"


def test_a_periodic_sync_stores_the_files_and_the_summary_counts_them_once(
    tmp_path: Path, fake_api: FakeRunnerApi, repo_ref: RepoRef
) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    job = assign(
        repo_ref,
        "mkdir -p out",
        "echo early > out/a",
        WAIT_FOR_GO,
        "echo late > out/b",
        artifacts=["out"],
    )
    with running(tmp_path, fake_api, store, artifact_sync_interval=0.1) as runner:
        fake_api.assignments.put(job)
        fake_api.wait_manifest("job-1", lambda m: bool(m.files))
        assert store.path(digest_of(b"early\n")).read_bytes() == b"early\n"
        (_code_dir(tmp_path) / "go").touch()
        assert fake_api.wait_final("job-1").status is JobStatus.DONE
        worker = runner.worker("job-1")
        assert worker is not None
        assert worker.join(10)
    manifest = fake_api.latest("job-1", "out")
    assert files_of(manifest) == {"a": digest_of(b"early\n"), "b": digest_of(b"late\n")}
    assert store.path(digest_of(b"late\n")).read_bytes() == b"late\n"
    assert "uploaded 2 files (" in fake_api.text("job-1")
    assert "of out; 0 unchanged" in fake_api.text("job-1")
    assert not (tmp_path / "runner" / "jobs" / "job-1").exists()
    assert all(not p.stat().st_mode & 0o222 for p in (tmp_path / "blobs").glob("??/*"))


def test_files_written_just_before_the_end_are_moved_in_whole(
    tmp_path: Path, fake_api: FakeRunnerApi, repo_ref: RepoRef
) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    job = assign(
        repo_ref,
        "mkdir -p out/sub",
        "head -c 3000000 /dev/zero > out/sub/big",
        "printf x >> out/sub/big",
        "echo small > out/s",
        artifacts=["out"],
    )
    with running(tmp_path, fake_api, store) as runner:
        fake_api.assignments.put(job)
        assert fake_api.wait_final("job-1").status is JobStatus.DONE
        worker = runner.worker("job-1")
        assert worker is not None
        assert worker.join(10)
    big = b"\0" * 3_000_000 + b"x"
    manifest = fake_api.latest("job-1", "out")
    assert files_of(manifest) == {"s": digest_of(b"small\n"), "sub/big": digest_of(big)}
    assert store.path(digest_of(big)).read_bytes() == big
    assert sorted(store.list_digests()) == sorted([digest_of(big), digest_of(b"small\n")])
    temp = tmp_path / "blobs" / "tmp"  # moved in by renames: made only for copies
    assert not temp.exists() or list(temp.iterdir()) == []
