"""A job's artifacts, dependency artifacts and workflow caches, through a runner (process)."""

from __future__ import annotations

from pathlib import Path

from tests.runner.artifact_helpers import (
    CountingStore,
    assign,
    dependency,
    digest_of,
    files_of,
    running,
    stored_manifest,
)
from tests.runner.conftest import FakeRunnerApi

from dstack.models.job import JobStatus, TerminationReason
from dstack.models.logs import LogStream
from dstack.models.protocol import HeartbeatResponse
from dstack.models.repo import RepoRef
from dstack.runner.executors.base import ExitResult, JobHandle, JobLaunch
from dstack.runner.executors.process import ProcessExecutor
from dstack.storage.local import LocalBlobStore

WAIT_FOR_GO = "while [ ! -f go ]; do sleep 0.05; done"


def _code_dir(tmp_path: Path, job_id: str = "job-1") -> Path:
    return tmp_path / "runner" / "jobs" / job_id / "code"


def test_artifacts_are_synced_while_the_job_runs(
    tmp_path: Path, fake_api: FakeRunnerApi, repo_ref: RepoRef
) -> None:
    store = CountingStore()
    job = assign(
        repo_ref, "mkdir -p model", "echo v1 > model/w.bin", WAIT_FOR_GO, artifacts=["model"]
    )
    with running(tmp_path, fake_api, store, artifact_sync_interval=0.1):
        fake_api.assignments.put(job)
        manifest = fake_api.wait_manifest("job-1", lambda m: bool(m.files))
        assert not any(u.status.is_finished() for u in fake_api.statuses["job-1"])
        assert files_of(manifest) == {"w.bin": digest_of(b"v1\n")}
        assert store.content(digest_of(b"v1\n")) == b"v1\n"
        (_code_dir(tmp_path) / "go").touch()
        assert fake_api.wait_final("job-1").status is JobStatus.DONE


def test_mount_artifacts_sync_on_their_own_faster_interval(
    tmp_path: Path, fake_api: FakeRunnerApi, repo_ref: RepoRef
) -> None:
    store = CountingStore()
    job = assign(repo_ref, "mkdir -p live", "echo 1 > live/step", WAIT_FOR_GO, mounts=["live"])
    with running(tmp_path, fake_api, store, mount_sync_interval=0.1):
        fake_api.assignments.put(job)
        fake_api.wait_manifest("job-1", lambda m: bool(m.files))
        (_code_dir(tmp_path) / "go").touch()
        fake_api.wait_final("job-1")


def test_uploading_is_reported_before_done_with_a_summary_in_the_log(
    tmp_path: Path, fake_api: FakeRunnerApi, repo_ref: RepoRef
) -> None:
    store = CountingStore()
    job = assign(
        repo_ref,
        "sleep 0.2",  # long enough to be reported `running` (a shorter job may not be)
        "mkdir -p model/sub",
        "printf abc > model/a",
        "printf defg > model/sub/b",
        "cp train.sh model/",
        artifacts=["model"],
    )
    with running(tmp_path, fake_api, store):
        fake_api.assignments.put(job)
        final = fake_api.wait_final("job-1")
    assert final.status is JobStatus.DONE
    events = fake_api.events["job-1"]
    assert events[:2] == ["status:downloading", "status:running"]
    # `uploading` is posted while the final sync runs: either may reach the server first.
    assert sorted(events[2:4]) == ["artifacts:model", "status:uploading"]
    assert events[4:] == ["status:done"]
    manifest = fake_api.latest("job-1", "model")
    assert sorted(files_of(manifest)) == ["a", "sub/b", "train.sh"]
    assert "uploaded 3 files (" in fake_api.text("job-1")
    assert "of model; 0 unchanged" in fake_api.text("job-1")


def test_an_unchanged_file_is_never_uploaded_twice(
    tmp_path: Path, fake_api: FakeRunnerApi, repo_ref: RepoRef
) -> None:
    store = CountingStore()
    first = assign(repo_ref, "mkdir out", "echo same > out/f", "sleep 0.5", artifacts=["out"])
    second = assign(repo_ref, "mkdir out", "echo same > out/f", artifacts=["out"], job_id="job-2")
    with running(tmp_path, fake_api, store, artifact_sync_interval=0.05):
        fake_api.assignments.put(first)
        assert fake_api.wait_final("job-1").status is JobStatus.DONE
        fake_api.assignments.put(second)
        assert fake_api.wait_final("job-2").status is JobStatus.DONE
    assert store.puts[digest_of(b"same\n")] == 1
    assert len(fake_api.artifacts["job-1"]) == 1  # periodic syncs of the same content post once
    assert "uploaded 0 files (0 B) of out; 1 unchanged" in fake_api.text("job-2")


def test_a_stop_keeps_what_the_job_wrote(
    tmp_path: Path, fake_api: FakeRunnerApi, repo_ref: RepoRef
) -> None:
    store = CountingStore()
    job = assign(repo_ref, "mkdir out", "echo partial > out/ckpt", "touch started", "sleep 300",
                 artifacts=["out"], cache=["~/.cache/x"])  # fmt: skip
    with running(tmp_path, fake_api, store):
        fake_api.assignments.put(job)
        fake_api.wait_status("job-1", lambda s: s is JobStatus.RUNNING)
        _wait_file(_code_dir(tmp_path) / "started")
        fake_api.answers.put(HeartbeatResponse(stop_jobs=["job-1"]))
        final = fake_api.wait_final("job-1")
    assert final.status is JobStatus.STOPPED
    assert files_of(fake_api.latest("job-1", "out")) == {"ckpt": digest_of(b"partial\n")}
    assert store.content(digest_of(b"partial\n")) == b"partial\n"
    assert [m.path for m in fake_api.caches["job-1"]] == ["~/.cache/x"]  # stopped: saved


def test_an_abort_keeps_what_the_job_wrote_but_saves_no_cache(
    tmp_path: Path, fake_api: FakeRunnerApi, repo_ref: RepoRef
) -> None:
    store = CountingStore()
    job = assign(repo_ref, "trap '' TERM", "mkdir out", "echo partial > out/ckpt",
                 "touch started", "sleep 300", artifacts=["out"], cache=["~/.cache/x"])  # fmt: skip
    with running(tmp_path, fake_api, store):
        fake_api.assignments.put(job)
        _wait_file(_code_dir(tmp_path) / "started")
        fake_api.answers.put(HeartbeatResponse(abort_jobs=["job-1"]))
        final = fake_api.wait_final("job-1")
    assert final.status is JobStatus.ABORTED
    assert files_of(fake_api.latest("job-1", "out")) == {"ckpt": digest_of(b"partial\n")}
    assert fake_api.caches["job-1"] == []


def test_dependency_artifacts_are_placed_before_the_job_runs(
    tmp_path: Path, fake_api: FakeRunnerApi, repo_ref: RepoRef
) -> None:
    store = CountingStore()
    data = stored_manifest(store, "data", {"in.txt": b"dogs\n", "extra/more.txt": b"more\n"})
    single = stored_manifest(store, "vocab.txt", {"": b"a b c\n"})
    job = assign(repo_ref, "bash train.sh", "cat data/extra/more.txt vocab.txt")
    job.deps.append(dependency(data, single))
    with running(tmp_path, fake_api, store):
        fake_api.assignments.put(job)
        final = fake_api.wait_final("job-1")
    assert final.status is JobStatus.DONE
    assert fake_api.text("job-1", LogStream.STDOUT) == "training on dogs\nmore\na b c\n"
    assert "placed 2 files (10 B) of dependency 'prepare' (run old-dog-1) at data" in (
        fake_api.text("job-1")
    )
    assert next(u.status for u in fake_api.statuses["job-1"]) is JobStatus.DOWNLOADING


def test_a_corrupt_dependency_blob_fails_the_job_naming_it(
    tmp_path: Path, fake_api: FakeRunnerApi, repo_ref: RepoRef
) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    data = stored_manifest(store, "data", {"in.txt": b"dogs\n"})
    digest = data.files[0].digest
    blob = store.path(digest)
    blob.chmod(0o644)
    blob.write_bytes(b"cats\n")
    job = assign(repo_ref, "echo never runs")
    job.deps.append(dependency(data))
    with running(tmp_path, fake_api, store):
        fake_api.assignments.put(job)
        final = fake_api.wait_final("job-1")
    assert (final.status, final.reason) == (JobStatus.FAILED, TerminationReason.EXECUTOR_ERROR)
    assert final.message is not None
    assert "artifact 'data' of dependency 'prepare' (run old-dog-1)" in final.message
    assert digest in final.message
    assert "never runs" not in fake_api.text("job-1", LogStream.STDOUT)
    assert JobStatus.RUNNING not in [u.status for u in fake_api.statuses["job-1"]]


def test_a_missing_dependency_blob_fails_the_job_naming_it(
    tmp_path: Path, fake_api: FakeRunnerApi, repo_ref: RepoRef
) -> None:
    store = CountingStore()
    data = stored_manifest(store, "data", {"in.txt": b"dogs\n"})
    store.delete(data.files[0].digest)
    job = assign(repo_ref, "echo never runs")
    job.deps.append(dependency(data))
    with running(tmp_path, fake_api, store):
        fake_api.assignments.put(job)
        final = fake_api.wait_final("job-1")
    assert final.status is JobStatus.FAILED
    assert final.message is not None
    assert data.files[0].digest in final.message


def test_caches_are_restored_into_the_jobs_home_and_saved_after_it(
    tmp_path: Path, fake_api: FakeRunnerApi, repo_ref: RepoRef
) -> None:
    store = CountingStore()
    saved = stored_manifest(store, "~/.cache/x", {"old.whl": b"wheel\n"})
    job = assign(
        repo_ref,
        'test "$HOME" = "$(cd ../home && pwd)"',
        "cat ~/.cache/x/old.whl",
        "echo fresh > ~/.cache/x/new.whl",
        cache=["~/.cache/x"],
    )
    job.caches.append(saved)
    with running(tmp_path, fake_api, store):
        fake_api.assignments.put(job)
        final = fake_api.wait_final("job-1")
    assert final.status is JobStatus.DONE, fake_api.text("job-1")
    assert fake_api.text("job-1", LogStream.STDOUT) == "wheel\n"
    assert "restored cache ~/.cache/x: 1 file (6 B)" in fake_api.text("job-1")
    assert "saved cache ~/.cache/x: uploaded 1 file (6 B); 1 unchanged" in fake_api.text("job-1")
    (cache,) = fake_api.caches["job-1"]
    assert files_of(cache) == {"new.whl": digest_of(b"fresh\n"), "old.whl": digest_of(b"wheel\n")}
    assert store.content(digest_of(b"fresh\n")) == b"fresh\n"


def test_home_artifact_paths_of_a_process_job_are_in_its_own_home(
    tmp_path: Path, fake_api: FakeRunnerApi, repo_ref: RepoRef
) -> None:
    store = CountingStore()
    job = assign(
        repo_ref,
        "mkdir -p ~/.cache/models",
        "echo cached > ~/.cache/models/m",
        artifacts=["~/.cache/models"],
    )
    with running(tmp_path, fake_api, store):
        fake_api.assignments.put(job)
        assert fake_api.wait_final("job-1").status is JobStatus.DONE
    assert files_of(fake_api.latest("job-1", "~/.cache/models")) == {"m": digest_of(b"cached\n")}


def test_an_absolute_artifact_path_of_a_process_job_is_refused_before_it_starts(
    tmp_path: Path, fake_api: FakeRunnerApi, repo_ref: RepoRef
) -> None:
    output = tmp_path / "host-output"
    output.mkdir()
    (output / "o").write_text("host file\n")
    job = assign(repo_ref, "echo started > started", artifacts=[str(output)])
    with running(tmp_path, fake_api, CountingStore()):
        fake_api.assignments.put(job)
        final = fake_api.wait_final("job-1")
    assert final.status is JobStatus.FAILED
    assert f"artifact path '{output}' is absolute" in (final.message or "")
    assert not fake_api.artifacts.get("job-1")
    assert (output / "o").read_text() == "host file\n"


def test_a_local_store_takes_the_files_and_the_job_dir_goes(
    tmp_path: Path, fake_api: FakeRunnerApi, repo_ref: RepoRef
) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    job = assign(repo_ref, "mkdir out", "echo big > out/w", artifacts=["out"])
    with running(tmp_path, fake_api, store) as runner:
        fake_api.assignments.put(job)
        assert fake_api.wait_final("job-1").status is JobStatus.DONE
        worker = runner.worker("job-1")
        assert worker is not None
        assert worker.join(10)
    blob = store.path(digest_of(b"big\n"))
    assert blob.read_bytes() == b"big\n"
    assert blob.stat().st_mode & 0o222 == 0
    assert not (tmp_path / "runner" / "jobs" / "job-1").exists()


def test_kept_job_dirs_hold_no_link_to_a_stored_blob(
    tmp_path: Path, fake_api: FakeRunnerApi, repo_ref: RepoRef
) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    data = stored_manifest(store, "data", {"in.txt": b"dogs\n"})
    job = assign(repo_ref, "mkdir out", "echo big > out/w", artifacts=["out"])
    job.deps.append(dependency(data))
    with running(tmp_path, fake_api, store, keep_job_dirs=True) as runner:
        fake_api.assignments.put(job)
        assert fake_api.wait_final("job-1").status is JobStatus.DONE
        worker = runner.worker("job-1")
        assert worker is not None
        assert worker.join(10)
    code = _code_dir(tmp_path)
    for placed in (code / "data" / "in.txt", code / "out" / "w"):
        assert placed.stat().st_nlink == 1
        assert placed.stat().st_mode & 0o200
    assert store.path(digest_of(b"big\n")).read_bytes() == b"big\n"


def test_a_failed_upload_fails_a_job_that_was_done(
    tmp_path: Path, fake_api: FakeRunnerApi, repo_ref: RepoRef
) -> None:
    store = CountingStore()
    store.fail_puts = True
    job = assign(repo_ref, "mkdir out", "echo x > out/w", artifacts=["out"])
    with running(tmp_path, fake_api, store):
        fake_api.assignments.put(job)
        final = fake_api.wait_final("job-1")
    assert (final.status, final.reason) == (JobStatus.FAILED, TerminationReason.EXECUTOR_ERROR)
    assert final.message is not None
    assert "disk full" in final.message
    assert "error: cannot upload the artifacts" in fake_api.text("job-1")
    assert fake_api.artifacts["job-1"] == []  # never a manifest whose blobs are missing


def test_a_job_without_artifacts_reports_no_uploading(
    tmp_path: Path, fake_api: FakeRunnerApi, repo_ref: RepoRef
) -> None:
    with running(tmp_path, fake_api, CountingStore()):
        fake_api.assignments.put(assign(repo_ref, "sleep 0.2", "echo hi"))
        fake_api.wait_final("job-1")
    assert [u.status for u in fake_api.statuses["job-1"]] == [
        JobStatus.DOWNLOADING,
        JobStatus.RUNNING,
        JobStatus.DONE,
    ]


def _wait_file(path: Path, timeout: float = 20) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


class _CrashingHandle:
    """Wraps a real handle; its `wait` reports a crash of the executor after the job ended."""

    def __init__(self, handle: JobHandle) -> None:
        self._handle = handle

    def wait(self, timeout: float | None = None) -> ExitResult | None:
        self._handle.wait(timeout)
        raise RuntimeError("the engine went away")

    def stop(self, grace: float) -> None:
        self._handle.stop(grace)

    def kill(self) -> None:
        self._handle.kill()

    def cleanup(self) -> None:
        self._handle.cleanup()


class _CrashingExecutor(ProcessExecutor):
    def start(self, job: JobLaunch) -> _CrashingHandle:  # type: ignore[override]
        return _CrashingHandle(super().start(job))


def test_a_crashed_executor_still_uploads_what_the_job_wrote(
    tmp_path: Path, fake_api: FakeRunnerApi, repo_ref: RepoRef
) -> None:
    store = CountingStore()
    job = assign(repo_ref, "mkdir out", "echo x > out/w", artifacts=["out"])
    with running(tmp_path, fake_api, store, executor=lambda _: _CrashingExecutor()):
        fake_api.assignments.put(job)
        final = fake_api.wait_final("job-1")
    assert (final.status, final.reason) == (JobStatus.FAILED, TerminationReason.EXECUTOR_ERROR)
    assert final.message is not None
    assert "the engine went away" in final.message
    assert files_of(fake_api.latest("job-1", "out")) == {"w": digest_of(b"x\n")}
