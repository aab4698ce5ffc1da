"""App URLs in the attached view: printed once ready, and rewritten in the logs."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from dstack.cli.attach import AppAnnouncer, AttachedView, HostPorts
from dstack.cli.urls import LogRewriter, app_url, rewrite_urls
from dstack.models.job import AppSpec, Job, JobSpec, JobStatus, PortSpec
from dstack.models.logs import LogEvent, LogStream
from dstack.models.repo import RepoRef
from dstack.models.run import Run

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_app_url_has_the_path_and_the_token() -> None:
    app = AppSpec(name="lab", port_index=0, url_path="/lab", url_query={"token": "a b"})
    assert app_url("127.0.0.1:8888", app) == "http://127.0.0.1:8888/lab?token=a+b"
    assert app_url("127.0.0.1:80", AppSpec(name="x", port_index=0)) == "http://127.0.0.1:80/"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("at http://0.0.0.0:8501\n", "at http://127.0.0.1:41000\n"),
        ("http://localhost:8501/lab?token=x", "http://127.0.0.1:41000/lab?token=x"),
        ("(http://127.0.0.1:8501/)", "(http://127.0.0.1:41000/)"),
        ("http://3f2a9c1d8e7b:8501/tree", "http://127.0.0.1:41000/tree"),
        (
            "http://0.0.0.0:85010 and http://0.0.0.0:850",
            "http://0.0.0.0:85010 and http://0.0.0.0:850",
        ),
        ("see https://pypi.org/simple", "see https://pypi.org/simple"),
    ],
)
def test_urls_of_the_jobs_ports_are_rewritten(text: str, expected: str) -> None:
    assert rewrite_urls(text, {8501: "127.0.0.1:41000"}) == expected


def _event(job_id: str, data: str) -> LogEvent:
    return LogEvent(job_id=job_id, seq=0, timestamp=NOW, stream=LogStream.STDERR, data=data)


def test_only_the_ports_of_the_job_that_printed_the_line_are_rewritten() -> None:
    rewriter = LogRewriter()
    rewriter.set_ports("a", {8000: "127.0.0.1:9000"})

    events = rewriter([_event("a", "http://0.0.0.0:8000\n"), _event("b", "http://0.0.0.0:8000\n")])

    assert [e.data for e in events] == ["http://127.0.0.1:9000\n", "http://0.0.0.0:8000\n"]


def _job(index: int, *, status: JobStatus, host_ports: list[int], ready: bool) -> Job:
    spec = JobSpec(
        provider="lab",
        workflow_name=f"w{index}",
        ports=[PortSpec() for _ in host_ports],
        apps=[AppSpec(name="lab", port_index=0, url_path="/lab", url_query={"token": "T"})],
    )
    return Job(
        id=f"job-{index}",
        run_name="wise-cat-1",
        index=index,
        workflow_name=f"w{index}",
        spec=spec,
        status=status,
        host_ports=host_ports,
        apps_ready_at=NOW if ready else None,
        submitted_at=NOW,
    )


def _run(*jobs: Job) -> Run:
    repo = RepoRef(repo_id="github.com/acme/models", tree="0" * 40)
    return Run(
        name="wise-cat-1",
        repo=repo,
        workflow_name="w0",
        user="me",
        submitted_at=NOW,
        status=JobStatus.RUNNING,
        jobs=list(jobs),
    )


class _Forwarded:
    """Addresses as a remote run gets them: another local port than the job's."""

    def addresses(self, run: Run) -> dict[tuple[int, int], str]:
        return {(job.index, 0): f"127.0.0.1:{20000 + job.index}" for job in run.jobs}

    def close(self) -> None:
        pass


def test_waiting_is_said_once_then_the_url_once() -> None:
    err = io.StringIO()
    rewriter = LogRewriter()
    announce = AppAnnouncer(HostPorts(), rewriter, err)

    announce(_run(_job(0, status=JobStatus.PROVISIONING, host_ports=[], ready=False)))
    announce(_run(_job(0, status=JobStatus.RUNNING, host_ports=[8888], ready=False)))
    announce(_run(_job(0, status=JobStatus.RUNNING, host_ports=[8888], ready=False)))
    announce(_run(_job(0, status=JobStatus.RUNNING, host_ports=[8888], ready=True)))
    announce(_run(_job(0, status=JobStatus.RUNNING, host_ports=[8888], ready=True)))

    assert err.getvalue() == (
        "waiting for app 'lab' on port 8888…\napp 'lab': http://127.0.0.1:8888/lab?token=T\n"
    )
    assert rewriter([_event("job-0", "http://0.0.0.0:8888/")])[0].data == "http://127.0.0.1:8888/"


def test_forwarded_addresses_are_shown_and_used_for_the_rewrite() -> None:
    err = io.StringIO()
    rewriter = LogRewriter()
    announce = AppAnnouncer(_Forwarded(), rewriter, err)

    announce(
        _run(
            _job(0, status=JobStatus.RUNNING, host_ports=[8888], ready=True),
            _job(1, status=JobStatus.RUNNING, host_ports=[8888], ready=True),
        )
    )

    assert err.getvalue() == (
        "w0: app 'lab': http://127.0.0.1:20000/lab?token=T\nw1: app 'lab': http://127.0.0.1:20001/lab?token=T\n"
    )
    [line] = rewriter([_event("job-1", "http://abc:8888/lab")])
    assert line.data == "http://127.0.0.1:20001/lab"


class _CountingClient:
    def __init__(self, run: Run) -> None:
        self.run = run
        self.get_run_calls = 0

    def get_run(self, name: str) -> Run:
        self.get_run_calls += 1
        return self.run


def test_the_run_is_looked_at_only_for_the_output_of_jobs_with_ports() -> None:
    plain = _job(0, status=JobStatus.RUNNING, host_ports=[], ready=False)
    served = _job(1, status=JobStatus.RUNNING, host_ports=[8888], ready=False)
    client = _CountingClient(_run(plain, served))
    known = _run(plain, served.model_copy(update={"host_ports": []}))
    view = AttachedView(cast(Any, client), "wise-cat-1", HostPorts(), io.StringIO(), known=known)

    view.transform([_event("job-0", "hello\n")])
    assert client.get_run_calls == 0
    [line] = view.transform([_event("job-1", "http://0.0.0.0:8888/\n")])
    assert client.get_run_calls == 1
    assert line.data == "http://127.0.0.1:8888/\n"
