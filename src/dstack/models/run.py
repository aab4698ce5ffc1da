"""Runs: one invocation of a workflow or provider, made of jobs."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from dstack.models.common import Model
from dstack.models.job import Job, JobStatus
from dstack.models.repo import RepoRef


def run_status(jobs: list[Job]) -> JobStatus:
    """A run's status, derived from its jobs.

    Any job failed → failed; any stopped/aborted (and none failed) → that; all done → done;
    otherwise the most advanced active status, or pending/submitted.
    """
    return status_of([j.status for j in jobs])


def status_of(statuses: list[JobStatus]) -> JobStatus:
    """A run's status from its jobs' statuses (`run_status`)."""
    if not statuses:
        return JobStatus.SUBMITTED
    if all(s.is_finished() for s in statuses):
        for terminal in (JobStatus.FAILED, JobStatus.ABORTED, JobStatus.STOPPED):
            if terminal in statuses:
                return terminal
        return JobStatus.DONE
    for active in (
        JobStatus.RUNNING,
        JobStatus.UPLOADING,
        JobStatus.DOWNLOADING,
        JobStatus.PROVISIONING,
    ):
        if active in statuses:
            return active
    if JobStatus.PENDING in statuses:
        return JobStatus.PENDING
    return JobStatus.SUBMITTED


class Run(Model):
    name: str
    repo: RepoRef
    workflow_name: str | None
    provider: str | None = None
    args: list[str] = Field(default_factory=list)
    variables: dict[str, str] = Field(default_factory=dict)
    tag: str | None = Field(None, description="Tag to set when the run succeeds (or has).")
    user: str
    submitted_at: datetime
    status: JobStatus
    jobs: list[Job] = Field(default_factory=list)
    cost: float | None = Field(
        None, description="USD its jobs spent on cloud runners; None: none ran on one."
    )


def run_cost(jobs: list[Job]) -> float | None:
    """The sum of the jobs' costs; None when no job held a cloud runner."""
    return total_cost([j.cost for j in jobs])


def total_cost(costs: list[float | None]) -> float | None:
    """A run's cost from its jobs' costs (`run_cost`)."""
    known = [c for c in costs if c is not None]
    return round(sum(known), 6) if known else None
