"""`dstack ps [-a] [--all-repos] [RUN] [--json]`"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click

from dstack.cli.context import client_for, remote_option
from dstack.cli.render import (
    ago,
    console,
    cost,
    duration,
    job_label,
    price,
    print_runs,
    status_text,
    table,
)
from dstack.cli.scope import all_repos_option, repo_for
from dstack.models.job import Attempt, Job, JobStatus, job_attempts
from dstack.models.run import Run


@click.command()
@remote_option
@click.argument("run_name", metavar="RUN", required=False)
@click.option("-a", "--all", "show_all", is_flag=True, help="Show all runs, not only recent ones.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@all_repos_option
def ps(
    run_name: str | None, show_all: bool, as_json: bool, all_repos: bool, remote: str | None
) -> None:
    """List the current repository's runs, or show one run's jobs: status, reason, exit code,
    runner and phase times."""
    client = client_for(remote)
    if run_name:
        run = client.get_run(run_name)
        if as_json:
            click.echo(run.model_dump_json(indent=2))
        else:
            _print_run(run)
        return
    runs = client.list_runs(all=show_all, repo_id=repo_for("ps", all_repos=all_repos))
    if as_json:
        click.echo(json.dumps([r.model_dump(mode="json") for r in runs], indent=2))
    elif not runs:
        click.echo("No runs yet. Start one with `dstack run WORKFLOW`.")
    else:
        print_runs(runs)


def _instance_cells(job: Job) -> list[str]:
    """INSTANCE, MARKET, PRICE, COST of a job on (or waiting for) a cloud runner."""
    instance = job.instance
    if instance is None:
        return ["-", "-", "-", "-"]
    market = "spot" if instance.spot else "on-demand"
    return [instance.instance_type, market, price(instance.price), cost(job.cost)]


def _print_run(run: object) -> None:
    assert isinstance(run, Run)
    out = console()
    out.print(
        f"[bold]{run.name}[/]  {run.workflow_name or run.provider or '-'}  "
        f"{status_text(run.status)}  submitted {ago(run.submitted_at)}"
        + (f"  tag {run.tag}" if run.tag else "")
    )
    cloud = any(job.instance is not None for job in run.jobs)
    columns = ["JOB", "STATUS", "EXIT", "RUNNER", "QUEUED", "PROVISION", "DOWNLOAD", "RUNNING"]
    columns += ["UPLOAD", *(["INSTANCE", "MARKET", "PRICE", "COST"] if cloud else [])]
    t = table(*columns)
    for job in run.jobs:
        tm = job.timings
        t.add_row(
            job_label(job),
            status_text(job.status, job.reason),
            "" if job.exit_code is None else str(job.exit_code),
            job.runner_name or "-",
            duration(tm.queued),
            duration(tm.provisioning),
            duration(tm.downloading),
            duration(tm.running),
            duration(tm.uploading),
            *(_instance_cells(job) if cloud else []),
        )
    out.print(t)
    if run.cost is not None:
        out.print(f"cost {cost(run.cost)}")
    for job in run.jobs:
        if job.message:
            out.print(f"[dim]{job_label(job)}: {job.message}[/]")
    _print_cache(run)
    _print_attempts(run)


def _print_cache(run: Run) -> None:
    """Why each job ran (the cache's decision at submit, as `dstack plan` explained it);
    jobs that reused a result already say so in their message."""
    ran = [job for job in run.jobs if job.cache_reason and not job.reused_from]
    if not ran:
        return
    out = console()
    for job in ran:
        out.print(f"[dim]why {job_label(job)} ran: {job.cache_reason}[/]", highlight=False)


def _print_attempts(run: Run) -> None:
    """Jobs claimed more than once (re-queued after an interruption or a lost runner, or an
    unconfirmed claim): one row per attempt, with its runner (a cloud runner is named after
    its instance) and how it ended."""
    retried = [(job, job_attempts(job.history)) for job in run.jobs]
    retried = [(job, attempts) for job, attempts in retried if len(attempts) > 1]
    if not retried:
        return
    t = table("JOB", "ATTEMPT", "RUNNER", "STARTED", "DURATION", "END")
    for job, attempts in retried:
        for attempt in attempts:
            t.add_row(
                job_label(job),
                str(attempt.number),
                attempt.runner or "-",
                ago(attempt.started_at),
                duration(_seconds(attempt.started_at, attempt.ended_at)),
                _ending(attempt),
            )
    out = console()
    out.print()
    out.print(t)
    for job, attempts in retried:
        for attempt in attempts:
            if attempt.message and attempt.status in _REQUEUED:
                out.print(f"[dim]{job_label(job)} #{attempt.number}: {attempt.message}[/]")


_REQUEUED = (JobStatus.SUBMITTED, JobStatus.PENDING)


def _ending(attempt: Attempt) -> str:
    """`re-queued (interrupted)`, `done`, `failed (exit code)`, or the status it is in."""
    if attempt.status in _REQUEUED:
        reason = attempt.reason.value.replace("_", " ") if attempt.reason else "re-queued"
        return f"re-queued ({reason})"
    return status_text(attempt.status, attempt.reason)


def _seconds(start: datetime, end: datetime | None) -> float | None:
    if end is None:
        end = datetime.now(UTC)
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    if end.tzinfo is None:
        end = end.replace(tzinfo=UTC)
    return max((end - start).total_seconds(), 0.0)
