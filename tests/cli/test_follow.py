"""`RunFollower`: prints every line and the final statuses, asking the server for the run's
final state only when nothing it already has tells it."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any, cast

from dstack.cli.follow import RunFollower, exit_code_of
from dstack.models.job import Job, JobSpec, JobStatus, TerminationReason
from dstack.models.logs import LogEvent, LogStream
from dstack.models.protocol import LogsPage
from dstack.models.repo import RepoRef
from dstack.models.run import Run

NOW = datetime(2023, 1, 1, tzinfo=UTC)


def _run(status: JobStatus, exit_code: int | None = None) -> Run:
    reason = TerminationReason.EXIT_CODE if status is JobStatus.FAILED else None
    job = Job(
        id="j1",
        run_name="quick-fox-1",
        index=0,
        workflow_name="hello",
        spec=JobSpec(provider="bash", commands=["echo hello"]),
        status=status,
        reason=reason,
        exit_code=exit_code,
        submitted_at=NOW,
    )
    return Run(
        name="quick-fox-1",
        repo=RepoRef(repo_id="acme/models", tree="t" * 40),
        workflow_name="hello",
        user="admin",
        submitted_at=NOW,
        status=status,
        jobs=[job],
    )


class FakeServer:
    """Answers `get_logs` with the given pages in turn; counts `get_run` calls."""

    def __init__(self, pages: list[LogsPage], run: Run) -> None:
        self.pages = pages
        self.run = run
        self.get_run_calls = 0

    def get_logs(self, name: str, **_: Any) -> LogsPage:
        return self.pages.pop(0)

    def get_run(self, name: str) -> Run:
        self.get_run_calls += 1
        return self.run


def _line(seq: int, text: str) -> LogEvent:
    return LogEvent(job_id="j1", seq=seq, timestamp=NOW, stream=LogStream.STDOUT, data=text)


def _follow(server: FakeServer, known: Run | None = None) -> tuple[Run, str, str]:
    out, err = io.StringIO(), io.StringIO()
    client = cast(Any, server)
    final = RunFollower(client, "quick-fox-1", out=out, err=err, known=known).follow()
    return final, out.getvalue(), err.getvalue()


def test_a_run_finished_at_submit_is_not_fetched_again() -> None:
    done = _run(JobStatus.DONE)
    server = FakeServer([LogsPage(events=[], cursor="", finished=True)], done)

    final, out, err = _follow(server, known=done)

    assert final == done
    assert (out, err) == ("", "done\n")
    assert server.get_run_calls == 0


def test_a_run_whose_every_job_was_reused_at_submit_is_not_asked_about() -> None:
    done = _run(JobStatus.DONE)
    cached = done.model_copy(
        update={"jobs": [done.jobs[0].model_copy(update={"reused_from": "old-fox-1"})]}
    )
    server = FakeServer([], done)  # any request would fail: no page to answer with

    final, out, err = _follow(server, known=cached)

    assert final == cached
    assert (out, err) == ("", "done\n")
    assert server.get_run_calls == 0


def test_the_final_state_on_the_logs_page_spares_a_request() -> None:
    failed = _run(JobStatus.FAILED, exit_code=3)
    page = LogsPage(events=[_line(0, "hello\n")], cursor="0:0", finished=True, run=failed)
    server = FakeServer([page], failed)

    final, out, err = _follow(server, known=_run(JobStatus.SUBMITTED))

    assert out == "hello\n"
    assert err == "failed\n"
    assert exit_code_of(final) == 3
    assert server.get_run_calls == 0


def test_without_either_the_final_state_is_fetched() -> None:
    done = _run(JobStatus.DONE)
    pages = [
        LogsPage(events=[_line(0, "hello\n")], cursor="0:0", finished=False),
        LogsPage(events=[], cursor="0:0", finished=True),
    ]
    server = FakeServer(pages, done)

    final, out, err = _follow(server, known=_run(JobStatus.SUBMITTED))

    assert final == done
    assert out == "hello\n"
    assert err.endswith("done\n")
    assert server.get_run_calls >= 1


def test_a_just_submitted_run_is_not_looked_at_before_its_output() -> None:
    done = _run(JobStatus.DONE)
    pages = [
        LogsPage(events=[_line(0, "hello\n")], cursor="0:0", finished=False),
        LogsPage(events=[], cursor="0:0", finished=True, run=done),
    ]
    server = FakeServer(pages, done)

    final, out, err = _follow(server, known=_run(JobStatus.SUBMITTED))

    assert (final, out, err) == (done, "hello\n", "done\n")
    assert server.get_run_calls == 0


class ChangingServer(FakeServer):
    """`get_run` answers the given runs in turn (the last one from then on)."""

    def __init__(self, pages: list[LogsPage], runs: list[Run]) -> None:
        super().__init__(pages, runs[-1])
        self.runs = runs

    def get_run(self, name: str) -> Run:
        return self.runs.pop(0) if len(self.runs) > 1 else self.runs[0]


def _waiting(reason: TerminationReason, message: str, status: JobStatus) -> Run:
    run = _run(status)
    job = run.jobs[0].model_copy(update={"reason": reason, "message": message})
    return run.model_copy(update={"jobs": [job], "status": status})


def test_each_change_of_a_waiting_jobs_message_is_shown_and_then_why_it_failed() -> None:
    registering = _waiting(
        TerminationReason.WAITING_FOR_RUNNER,
        "waiting for a runner to register",
        JobStatus.PENDING,
    )
    creating = _waiting(
        TerminationReason.WAITING_FOR_RUNNER, "creating an instance", JobStatus.PENDING
    )
    failed = _waiting(TerminationReason.NO_CAPACITY, "no capacity in us-east-1", JobStatus.FAILED)
    pages = [
        LogsPage(events=[], cursor="", finished=False),
        LogsPage(events=[], cursor="", finished=False),
        LogsPage(events=[], cursor="", finished=True, run=failed),
    ]
    server = ChangingServer(pages, [registering, creating, failed])
    out, err = io.StringIO(), io.StringIO()

    RunFollower(cast(Any, server), "quick-fox-1", out=out, err=err).follow(poll_seconds=0)

    assert err.getvalue().splitlines() == [
        "pending (waiting for runner) — waiting for a runner to register",
        "pending (waiting for runner) — creating an instance",
        "failed (no capacity) — no capacity in us-east-1",
    ]
