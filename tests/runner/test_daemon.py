from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.runner.conftest import FakeRunnerApi

from dstack.errors import ConflictError
from dstack.models.job import JobSpec, JobStatus, PortSpec, TerminationReason
from dstack.models.logs import LogStream
from dstack.models.protocol import HeartbeatResponse, JobAssignment, JobStatusUpdate
from dstack.models.repo import RepoRef
from dstack.models.resources import HostResources
from dstack.runner.daemon import Runner
from dstack.runner.executors.process import ProcessExecutor
from dstack.runner.settings import RunnerSettings


@pytest.fixture
def runner(tmp_path: Path, fake_api: FakeRunnerApi) -> Iterator[Runner]:
    settings = RunnerSettings(
        server_url="http://server",
        token="t",
        name="box-1",
        work_dir=tmp_path / "runner",
        heartbeat_interval=0.05,
        claim_wait=0.05,
        stop_grace=5,
        labels={"zone": "lab"},
    )
    runner = Runner(
        settings,
        fake_api,
        lambda _: ProcessExecutor(),
        resources=lambda: HostResources(cpus=2, memory_mib=4096, disk_mib=1000),
    )
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    yield runner
    runner.shutdown()
    thread.join(20)
    assert not thread.is_alive()


def _assign(
    repo: RepoRef, *commands: str, job_id: str = "job-1", **kwargs: object
) -> JobAssignment:
    spec = JobSpec(provider="bash", workflow_name="train", commands=list(commands), **kwargs)
    return JobAssignment(job_id=job_id, run_name="wise-cat-1", job_index=0, spec=spec, repo=repo)


def test_a_claimed_job_reports_statuses_and_ships_its_logs(
    runner: Runner, fake_api: FakeRunnerApi, repo_ref: RepoRef
) -> None:
    assignment = _assign(
        repo_ref,
        "sleep 0.2",  # long enough to be reported `running` (a shorter job may not be)
        "bash train.sh",
        "echo run=$DSTACK_RUN_NAME job=$JOB_ID port=$PORT_0 same=$JOB_PORT_0"
        " unbuf=$PYTHONUNBUFFERED",
        "echo key=$API_KEY",
        "echo warn >&2",
        ports=[PortSpec()],
    )
    assignment.secrets["API_KEY"] = "hunter2-secret"
    fake_api.assignments.put(assignment)
    final = fake_api.wait_final("job-1")
    assert final.status is JobStatus.DONE
    assert final.reason is TerminationReason.DONE
    assert final.exit_code == 0
    statuses = [u.status for u in fake_api.statuses["job-1"]]
    assert statuses == [JobStatus.DOWNLOADING, JobStatus.RUNNING, JobStatus.DONE]
    port = fake_api.statuses["job-1"][1].host_ports[0]  # type: ignore[index]
    assert fake_api.text("job-1", LogStream.STDOUT) == (
        f"training on cats\nrun=wise-cat-1 job=job-1 port={port} same={port} unbuf=1\nkey=***\n"
    )
    assert fake_api.text("job-1", LogStream.STDERR) == "warn\n"
    registration = fake_api.registrations[0]
    assert registration.executors == ["process"]
    assert registration.labels == {"zone": "lab"}
    deadline = time.monotonic() + 10
    while (runner.settings.jobs_dir / "job-1").exists():  # removed once reported
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_the_next_job_of_the_same_code_copies_it_and_skips_downloading(
    runner: Runner, fake_api: FakeRunnerApi, repo_ref: RepoRef
) -> None:
    fake_api.assignments.put(_assign(repo_ref, "bash train.sh", job_id="job-1"))
    assert fake_api.wait_final("job-1").status is JobStatus.DONE
    fake_api.clear_blobs()  # the bundle is not needed again

    fake_api.assignments.put(_assign(repo_ref, "sleep 0.2", "bash train.sh", job_id="job-2"))

    assert fake_api.wait_final("job-2").status is JobStatus.DONE
    statuses = [u.status for u in fake_api.statuses["job-2"]]
    assert statuses == [JobStatus.RUNNING, JobStatus.DONE]
    assert fake_api.text("job-2") == "training on cats\n"


def test_a_failing_job_reports_its_exit_code_after_its_last_lines(
    runner: Runner, fake_api: FakeRunnerApi, repo_ref: RepoRef
) -> None:
    fake_api.log_failures = 2
    fake_api.assignments.put(_assign(repo_ref, "echo last words", "exit 4"))
    final = fake_api.wait_final("job-1")
    assert (final.status, final.reason, final.exit_code) == (
        JobStatus.FAILED,
        TerminationReason.EXIT_CODE,
        4,
    )
    assert fake_api.text("job-1") == "last words\n"


def test_stop_from_the_heartbeat_stops_the_job(
    runner: Runner, fake_api: FakeRunnerApi, repo_ref: RepoRef
) -> None:
    fake_api.assignments.put(
        _assign(repo_ref, "trap 'echo stopping; exit 0' TERM", "while true; do sleep 0.05; done")
    )
    fake_api.wait_status("job-1", lambda s: s is JobStatus.RUNNING)
    fake_api.answers.put(HeartbeatResponse(stop_jobs=["job-1"]))
    final = fake_api.wait_final("job-1")
    assert (final.status, final.reason) == (JobStatus.STOPPED, TerminationReason.STOPPED_BY_USER)
    assert fake_api.text("job-1", LogStream.STDOUT) == "stopping\n"


def test_abort_from_the_heartbeat_kills_the_job(
    runner: Runner, fake_api: FakeRunnerApi, repo_ref: RepoRef
) -> None:
    fake_api.assignments.put(_assign(repo_ref, "trap '' TERM", "sleep 300"))
    fake_api.wait_status("job-1", lambda s: s is JobStatus.RUNNING)
    fake_api.answers.put(HeartbeatResponse(abort_jobs=["job-1"]))
    final = fake_api.wait_final("job-1")
    assert (final.status, final.reason, final.exit_code) == (
        JobStatus.ABORTED,
        TerminationReason.ABORTED_BY_USER,
        137,
    )


def test_a_forgotten_job_is_killed_and_never_reported_again(
    runner: Runner, fake_api: FakeRunnerApi, repo_ref: RepoRef
) -> None:
    fake_api.assignments.put(_assign(repo_ref, "echo started", "sleep 300"))
    fake_api.wait_status("job-1", lambda s: s is JobStatus.RUNNING)
    fake_api.answers.put(HeartbeatResponse(forget_jobs=["job-1"]))
    worker = runner.worker("job-1")
    assert worker is not None
    assert worker.join(20)
    assert [u.status for u in fake_api.statuses["job-1"]] == [
        JobStatus.DOWNLOADING,
        JobStatus.RUNNING,
    ]
    assert runner.running_job_ids() == []


def test_a_job_with_an_image_fails_on_a_runner_without_docker(
    runner: Runner, fake_api: FakeRunnerApi, repo_ref: RepoRef
) -> None:
    fake_api.assignments.put(_assign(repo_ref, "echo hi", image="pytorch/pytorch:latest"))
    final = fake_api.wait_final("job-1")
    assert (final.status, final.reason) == (JobStatus.FAILED, TerminationReason.EXECUTOR_ERROR)
    assert final.message is not None
    assert "needs image pytorch/pytorch:latest" in final.message
    assert "this runner has no Docker" in fake_api.text("job-1", LogStream.STDERR)


def test_jobs_run_concurrently_and_heartbeats_list_them(
    runner: Runner, fake_api: FakeRunnerApi, repo_ref: RepoRef
) -> None:
    for job_id in ("a", "b"):
        fake_api.assignments.put(_assign(repo_ref, "sleep 300", job_id=job_id))
    for job_id in ("a", "b"):
        fake_api.wait_status(job_id, lambda s: s is JobStatus.RUNNING)
    fake_api.heartbeats.clear()
    fake_api.wait_status("a", lambda s: s is JobStatus.RUNNING)
    fake_api.answers.put(HeartbeatResponse(abort_jobs=["a", "b"]))
    assert fake_api.wait_final("a").status is JobStatus.ABORTED
    assert fake_api.wait_final("b").status is JobStatus.ABORTED
    assert any(sorted(h.running_jobs) == ["a", "b"] for h in fake_api.heartbeats)


class _HangingClaims(FakeRunnerApi):
    """A server whose claim long-poll never answers (gone, or a very long wait)."""

    def claim(self, wait_seconds: float) -> JobAssignment | None:
        threading.Event().wait(3600)
        return None


def test_shutdown_does_not_wait_for_a_hanging_claim(tmp_path: Path) -> None:
    settings = RunnerSettings(
        server_url="http://server", token="t", name="box-2", work_dir=tmp_path / "runner"
    )
    runner = Runner(
        settings,
        _HangingClaims(),
        lambda _: ProcessExecutor(),
        resources=lambda: HostResources(cpus=2, memory_mib=4096, disk_mib=1000),
    )
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    time.sleep(0.3)  # let it register and enter the claim

    runner.shutdown()
    thread.join(10)

    assert not thread.is_alive(), "run() kept waiting for the claim after shutdown"


def test_the_next_job_comes_in_the_answer_of_the_final_status(
    runner: Runner, fake_api: FakeRunnerApi, repo_ref: RepoRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    first: queue.Queue[JobAssignment] = queue.Queue()
    patched = threading.Event()

    def claim_first_only(wait_seconds: float) -> JobAssignment | None:
        patched.set()  # the claim loop calls this one from now on
        try:
            assignment = first.get(timeout=min(wait_seconds, 0.05))
        except queue.Empty:
            return None
        fake_api.holders[assignment.job_id] = runner.runner_id or ""
        return assignment

    monkeypatch.setattr(fake_api, "claim", claim_first_only)
    assert patched.wait(10)
    fake_api.assignments.put(_assign(repo_ref, "echo second", job_id="job-2"))
    first.put(_assign(repo_ref, "echo first", job_id="job-1"))

    assert fake_api.wait_final("job-2").status is JobStatus.DONE
    assert fake_api.next_jobs == ["job-2"]
    assert fake_api.statuses["job-1"][-1].next_job is True
    assert fake_api.text("job-2") == "second\n"


def test_a_final_status_overtakes_a_running_report_still_in_flight(
    runner: Runner, fake_api: FakeRunnerApi, repo_ref: RepoRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    post_status = fake_api.post_status

    def slow_running(job_id: str, update: JobStatusUpdate) -> JobAssignment | None:
        """`running` is answered only once the final status was recorded (a slow connection)."""
        if update.status is JobStatus.RUNNING:
            with contextlib.suppress(AssertionError):  # a runner waiting for it: after 10 s
                fake_api.wait_final(job_id, timeout=10)
        return post_status(job_id, update)

    monkeypatch.setattr(fake_api, "post_status", slow_running)
    fake_api.assignments.put(_assign(repo_ref, "sleep 0.2", "echo last words"))

    final = fake_api.wait_final("job-1")

    assert final.status is JobStatus.DONE
    assert final.exit_code == 0
    assert fake_api.text("job-1") == "last words\n"
    # Posted before `running` was answered; the late `running` was refused (the job is
    # final): nothing recorded, nothing undone.
    statuses = [u.status for u in fake_api.statuses["job-1"]]
    assert statuses == [JobStatus.DOWNLOADING, JobStatus.DONE]
    _wait_until(lambda: not (runner.settings.work_dir / "held" / "job-1").exists())
    assert not (runner.settings.jobs_dir / "job-1").exists()
    fake_api.assignments.put(_assign(repo_ref, "echo next", job_id="job-2"))
    assert fake_api.wait_final("job-2").status is JobStatus.DONE
    assert fake_api.text("job-2") == "next\n"


def test_a_final_status_that_crossed_a_change_of_its_job_is_posted_again(
    runner: Runner, fake_api: FakeRunnerApi, repo_ref: RepoRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    post_status = fake_api.post_status
    crossed: list[str] = []

    def conflict_once(job_id: str, update: JobStatusUpdate) -> JobAssignment | None:
        if update.status.is_finished() and not crossed:
            crossed.append(job_id)
            raise ConflictError(f"job {job_id} changed meanwhile", hint="report again")
        return post_status(job_id, update)

    monkeypatch.setattr(fake_api, "post_status", conflict_once)
    fake_api.assignments.put(_assign(repo_ref, "echo hi"))

    final = fake_api.wait_final("job-1")

    assert crossed == ["job-1"]
    assert final.status is JobStatus.DONE
    assert fake_api.text("job-1") == "hi\n"


def _wait_until(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.02)
