"""The typed clients against a real server: a fake runner made of `RunnerClient` calls
drives a run from submit to done while a user follows it with `Client`."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from dstack.api import Client, RunnerClient
from dstack.errors import (
    AuthError,
    ConflictError,
    NotFoundError,
    ServerError,
    StorageError,
)
from dstack.models.digests import digest_bytes
from dstack.models.job import JobSpec, JobStatus, TerminationReason
from dstack.models.logs import LogStream
from dstack.models.protocol import (
    HeartbeatRequest,
    JobStatusUpdate,
    JobSubmission,
    LogBatch,
    LogLine,
    SubmitRunRequest,
)
from dstack.models.repo import RepoRef

from .conftest import LiveServer, registered_runner


def _request(jobs: int = 1) -> SubmitRunRequest:
    spec = JobSpec(provider="bash", commands=["echo hello"])
    return SubmitRunRequest(
        repo=RepoRef(repo_id="acme/models", tree="t" * 40),
        workflow_name="hello",
        jobs=[JobSubmission(workflow_name="hello", spec=spec) for _ in range(jobs)],
    )


def _runner(server: LiveServer) -> RunnerClient:
    return registered_runner(server)


def _line(seq: int, text: str) -> LogLine:
    return LogLine(seq=seq, timestamp=datetime.now(UTC), stream=LogStream.STDOUT, data=text)


def test_submit_claim_report_logs_done(live_server: LiveServer) -> None:
    with Client(live_server.url, live_server.token) as user, _runner(live_server) as runner:
        run = user.submit_run(_request())
        assignment = runner.claim(10)
        assert assignment is not None
        assert assignment.run_name == run.name

        runner.post_status(assignment.job_id, JobStatusUpdate(status=JobStatus.RUNNING))
        assert user.get_run(run.name).status is JobStatus.RUNNING
        batch = LogBatch(lines=[_line(0, "hello\n"), _line(1, "world\n")])
        runner.post_logs(assignment.job_id, batch)
        runner.post_logs(assignment.job_id, batch)  # a retry after a lost answer is harmless

        page = user.get_logs(run.name, wait=5)
        assert [e.data for e in page.events] == ["hello\n", "world\n"]
        assert not page.finished

        done = JobStatusUpdate(status=JobStatus.DONE, exit_code=0)
        runner.post_status(assignment.job_id, done)
        last = user.get_logs(run.name, cursor=page.cursor, wait=5)
        assert last.events == []
        assert last.finished

        final = user.get_run(run.name)
        assert (final.status, final.jobs[0].reason) == (JobStatus.DONE, TerminationReason.DONE)
        assert final.jobs[0].runner_name == "fake"
        assert [r.name for r in user.list_runners()] == ["fake"]
        assert [r.name for r in user.list_runs()] == [run.name]
        runner.post_status(assignment.job_id, done)  # resent unchanged: a harmless no-op
        failed = JobStatusUpdate(status=JobStatus.FAILED, exit_code=1)
        with pytest.raises(ConflictError, match="already done"):  # 403: final
            runner.post_status(assignment.job_id, failed)
        assert runner.heartbeat(HeartbeatRequest(running_jobs=[assignment.job_id])).forget_jobs == [
            assignment.job_id
        ]

        user.delete_run(run.name)
        with pytest.raises(NotFoundError, match=f"run '{run.name}' not found"):
            user.get_run(run.name)


def test_stop_reaches_the_runner_through_heartbeat(live_server: LiveServer) -> None:
    with Client(live_server.url, live_server.token) as user, _runner(live_server) as runner:
        run = user.submit_run(_request())
        assignment = runner.claim(10)
        assert assignment is not None

        user.stop_run(run.name)
        with pytest.raises(ConflictError, match="stop it first"):
            user.delete_run(run.name)
        assert runner.heartbeat(HeartbeatRequest(running_jobs=[assignment.job_id])).stop_jobs == [
            assignment.job_id
        ]
        runner.post_status(assignment.job_id, JobStatusUpdate(status=JobStatus.STOPPED))

        stopped = user.get_run(run.name)
        assert stopped.status is JobStatus.STOPPED
        assert stopped.jobs[0].reason is TerminationReason.STOPPED_BY_USER


def test_blobs_round_trip_and_verify(live_server: LiveServer, tmp_path: Path) -> None:
    data = b"x" * (3 * 1024 * 1024 + 5)
    digest = digest_bytes(data)
    source = tmp_path / "artifact.bin"
    source.write_bytes(data)

    with Client(live_server.url, live_server.token) as user:
        assert not user.has_blob(digest)
        user.put_blob(source, digest)
        assert user.has_blob(digest)
        user.get_blob(digest, tmp_path / "out" / "copy.bin")
        assert (tmp_path / "out" / "copy.bin").read_bytes() == data

        with pytest.raises(StorageError, match="does not match"):
            user.put_blob(source, digest_bytes(b"other"))
        with pytest.raises(NotFoundError):
            user.get_blob(digest_bytes(b"missing"), tmp_path / "missing")
        assert not (tmp_path / "missing").exists()


def test_wrong_token_is_an_auth_error(live_server: LiveServer) -> None:
    with Client(live_server.url, "wrong") as user, pytest.raises(AuthError):
        user.list_runs()


def test_unreachable_server_is_a_server_error() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with (
        Client(f"http://127.0.0.1:{port}", "t", timeout=2) as user,
        pytest.raises(ServerError, match="cannot reach the dstack server"),
    ):
        user.health()
