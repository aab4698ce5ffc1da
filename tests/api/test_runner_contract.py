"""One contract suite for `RunnerApi`: the in-memory `FakeRunnerApi` and `RunnerClient`
against the real server app over HTTP must behave alike (the docstrings of
`dstack.api.runner.RunnerApi`)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dstack.api import Client
from dstack.api.runner import RunnerApi, RunnerClient
from dstack.api.runner_fake import FakeRunnerApi
from dstack.errors import AuthError, ConflictError, NotFoundError
from dstack.models.artifacts import FileEntry, Manifest
from dstack.models.digests import digest_bytes
from dstack.models.job import JobSpec, JobStatus
from dstack.models.logs import LogStream
from dstack.models.protocol import (
    HeartbeatRequest,
    JobAssignment,
    JobStatusUpdate,
    JobSubmission,
    LogBatch,
    LogLine,
    RegisterRunnerRequest,
    SubmitRunRequest,
)
from dstack.models.repo import RepoRef
from dstack.models.resources import HostResources

from .conftest import LiveServer

REPO = RepoRef(repo_id="acme/models", tree="t" * 40)
SPEC = JobSpec(provider="bash", commands=["echo hello"])
REQUEST = RegisterRunnerRequest(
    name="contract",
    host="h",
    resources=HostResources(cpus=2, memory_mib=4096, disk_mib=10_000),
    executors=["process"],
)


@dataclass
class Side:
    """A `RunnerApi` and a way to give its server one job to hand out."""

    api: RunnerApi
    registration_token: str
    submit: Callable[[], None]


@pytest.fixture(params=["fake", "live"])
def side(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Side]:
    if request.param == "fake":
        fake = FakeRunnerApi()
        ids = itertools.count(1)

        def queue_job() -> None:
            job_id = f"job-{next(ids)}"
            fake.assignments.put(
                JobAssignment(job_id=job_id, run_name="r-1", job_index=0, spec=SPEC, repo=REPO)
            )

        yield Side(fake, fake.registration_token, queue_job)
        return
    live: LiveServer = request.getfixturevalue("live_server")
    with Client(live.url, live.token) as user, RunnerClient(live.url, live.runner_token) as api:

        def submit() -> None:
            job = JobSubmission(workflow_name="hello", spec=SPEC)
            user.submit_run(SubmitRunRequest(repo=REPO, workflow_name="hello", jobs=[job]))

        yield Side(api, live.runner_token, submit)


def _claim(side: Side) -> JobAssignment:
    side.submit()
    for _ in range(50):
        assignment = side.api.claim(0.2)
        if assignment is not None:
            return assignment
    raise AssertionError("no job came")


def _line(seq: int, text: str) -> LogLine:
    return LogLine(seq=seq, timestamp=datetime.now(UTC), stream=LogStream.STDOUT, data=text)


def test_registering_binds_the_client_to_its_own_credential(side: Side) -> None:
    answer = side.api.register(REQUEST)

    assert answer.runner_id
    assert side.api.credential == (answer.runner_token or side.registration_token)


def test_the_credential_registers_the_same_runner_again(side: Side) -> None:
    first = side.api.register(REQUEST)
    again = side.api.register(REQUEST, credential=side.api.credential)

    assert again.runner_id == first.runner_id
    assert again.runner_token is None
    assert again.server_id == first.server_id


def test_a_refused_credential_is_an_auth_error_and_changes_nothing(side: Side) -> None:
    side.api.register(REQUEST)
    before = side.api.credential

    with pytest.raises(AuthError):
        side.api.register(REQUEST, credential="not-a-credential-of-this-server")

    assert side.api.credential == before
    side.api.heartbeat(HeartbeatRequest(running_jobs=[]))


def test_without_jobs_a_claim_answers_none_and_a_heartbeat_nothing(side: Side) -> None:
    side.api.register(REQUEST)

    assert side.api.claim(0.1) is None
    answer = side.api.heartbeat(HeartbeatRequest(running_jobs=[]))
    assert (answer.stop_jobs, answer.abort_jobs, answer.forget_jobs) == ([], [], [])


def test_a_claimed_job_is_reported_until_final_and_then_refused(side: Side, tmp_path: Path) -> None:
    side.api.register(REQUEST)
    assignment = _claim(side)
    job_id = assignment.job_id

    side.api.post_status(job_id, JobStatusUpdate(status=JobStatus.RUNNING))
    batch = LogBatch(lines=[_line(0, "hello\n")])
    side.api.post_logs(job_id, batch)
    side.api.post_logs(job_id, batch)  # sent again after a lost answer: harmless
    data = b"model weights"
    digest = digest_bytes(data)
    side.api.blob_store(assignment.storage).put_bytes(data, digest)
    entry = FileEntry(path="model.bin", size=len(data), mode=0o644, digest=digest)
    side.api.post_artifacts(job_id, Manifest(path="out", files=[entry]))
    side.api.get_blob(digest, tmp_path / "copy")
    assert (tmp_path / "copy").read_bytes() == data
    done = JobStatusUpdate(status=JobStatus.DONE, exit_code=0)
    side.api.post_status(job_id, done)
    side.api.post_status(job_id, done)  # resent after a lost answer: a no-op

    with pytest.raises(ConflictError):
        side.api.post_status(job_id, JobStatusUpdate(status=JobStatus.FAILED, exit_code=1))
    with pytest.raises(ConflictError):
        side.api.post_logs(job_id, LogBatch(lines=[_line(1, "late\n")]))


def test_a_missing_blob_is_not_found_and_leaves_no_file(side: Side, tmp_path: Path) -> None:
    side.api.register(REQUEST)
    digest = digest_bytes(b"nobody stored this")

    with pytest.raises(NotFoundError):
        side.api.get_blob(digest, tmp_path / "missing")

    assert not (tmp_path / "missing").exists()


def test_clone_credentials_of_a_job_not_held_are_refused(side: Side) -> None:
    side.api.register(REQUEST)

    with pytest.raises((ConflictError, NotFoundError)):
        side.api.get_repo_credentials("job-of-nobody")


def test_a_final_status_asking_for_the_next_job_is_answered_with_it(side: Side) -> None:
    side.api.register(REQUEST)
    first = _claim(side)
    side.submit()
    side.api.post_status(first.job_id, JobStatusUpdate(status=JobStatus.RUNNING))
    early = JobStatusUpdate(status=JobStatus.RUNNING, next_job=True)
    assert side.api.post_status(first.job_id, early) is None  # only a final status asks

    done = JobStatusUpdate(status=JobStatus.DONE, exit_code=0, next_job=True)
    following = side.api.post_status(first.job_id, done)

    assert following is not None
    assert following.job_id != first.job_id
    side.api.post_status(following.job_id, JobStatusUpdate(status=JobStatus.RUNNING))  # its own
    assert side.api.claim(0.1) is None  # handed out once


def test_a_final_status_that_does_not_ask_gets_no_job(side: Side) -> None:
    side.api.register(REQUEST)
    first = _claim(side)
    side.submit()
    side.api.post_status(first.job_id, JobStatusUpdate(status=JobStatus.RUNNING))

    done = JobStatusUpdate(status=JobStatus.DONE, exit_code=0)
    assert side.api.post_status(first.job_id, done) is None

    assert side.api.claim(0.2) is not None  # still waiting for a claim
