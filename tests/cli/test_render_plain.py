"""The runs table written without rich is exactly what rich writes, or rich writes it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dstack.cli import render
from dstack.cli.render import console, print_runs, runs_table
from dstack.models.job import Job, JobSpec, JobStatus, TerminationReason
from dstack.models.repo import RepoRef
from dstack.models.run import Run

NOW = datetime.now(UTC)


def _job(index: int, name: str, status: JobStatus, reason: TerminationReason | None) -> Job:
    return Job(
        id=f"j{index}",
        run_name="r",
        index=index,
        workflow_name=name,
        spec=JobSpec(provider="bash", commands=["true"]),
        status=status,
        reason=reason,
        submitted_at=NOW,
    )


def _run(name: str, workflow: str | None, jobs: list[Job], **extra: object) -> Run:
    return Run.model_validate(
        {
            "name": name,
            "repo": RepoRef(repo_id="acme/models", tree="t" * 40),
            "workflow_name": workflow,
            "user": "admin",
            "submitted_at": NOW - timedelta(seconds=90),
            "status": jobs[-1].status,
            "jobs": jobs,
            **extra,
        }
    )


CASES = {
    "one job": [_run("quick-fox-1", "hello", [_job(0, "hello", JobStatus.SUBMITTED, None)])],
    "a chain": [
        _run(
            "dancing-dog-12",
            "step-c",
            [
                _job(0, "step-a", JobStatus.DONE, None),
                _job(1, "step-b", JobStatus.FAILED, TerminationReason.EXIT_CODE),
                _job(2, "step-c", JobStatus.PENDING, TerminationReason.DEPENDENCY_FAILED),
            ],
            tag="v1",
        ),
        _run("a", None, [_job(0, "x", JobStatus.STOPPED, None)], provider="bash"),
    ],
    "several repositories and users": [
        _run("r-1", "hello", [_job(0, "hello", JobStatus.DONE, None)]),
        _run(
            "r-2",
            "hello",
            [_job(0, "hello", JobStatus.DONE, None)],
            repo=RepoRef(repo_id="acme/other", tree="t" * 40),
            user="bob",
        ),
    ],
    "markup in a name": [_run("r-1", "[bold]x", [_job(0, "x", JobStatus.DONE, None)])],
    "too wide": [_run("r" * 70, "w" * 20, [_job(0, "x", JobStatus.RUNNING, None)])],
    "wide characters": [_run("r-1", "训练", [_job(0, "x", JobStatus.RUNNING, None)])],
}


@pytest.fixture(autouse=True)
def _plain_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in render._RICH_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("case", sorted(CASES))
def test_plain_text_is_what_rich_prints(case: str, capsys: pytest.CaptureFixture[str]) -> None:
    runs = CASES[case]
    console(stderr=True).print(runs_table(runs))
    by_rich = capsys.readouterr().err

    print_runs(runs, stderr=True)

    assert capsys.readouterr().err == by_rich


@pytest.mark.parametrize(
    ("case", "plain"),
    [
        ("one job", True),
        ("a chain", True),
        ("several repositories and users", True),
        ("markup in a name", False),
        ("too wide", False),
    ],
)
def test_rich_is_left_out_only_where_the_text_is_plain(
    case: str, plain: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    assert (render.plain_runs_table(CASES[case], sys.stderr) is not None) == plain


def test_repo_and_user_columns_only_where_the_runs_have_several(
    capsys: pytest.CaptureFixture[str],
) -> None:
    print_runs(CASES["several repositories and users"], stderr=True)
    several = capsys.readouterr().err.splitlines()
    print_runs(CASES["one job"], stderr=True)
    one = capsys.readouterr().err.splitlines()

    assert one[0].split()[:2] == ["RUN", "WORKFLOW"]
    assert several[0].split()[:4] == ["RUN", "REPO", "USER", "WORKFLOW"]
    assert several[1].split()[:3] == ["r-1", "models", "admin"]
    assert several[2].split()[:3] == ["r-2", "other", "bob"]
