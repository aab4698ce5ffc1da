"""External dependencies: `tag: T`, `X:T` and `X:latest` resolved to earlier runs' artifacts.

Each resolves in the repository of the run that depends on it, never in another one: a tag
is looked up by (repository, name), `X:latest` among that repository's runs.

Resolution happens once, when a run is submitted (or planned); the result is fixed on the job
(`JobRow.external_artifacts`) so a tag that moves later does not change what a job receives.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from dstack.errors import NotFoundError
from dstack.models.artifacts import DepArtifacts, JobArtifacts
from dstack.models.job import JobStatus
from dstack.models.protocol import SubmitRunRequest
from dstack.models.workflow import DepKind, DepRef
from dstack.server.db.models import JobRow, RunRow, TagRow
from dstack.server.errors import InvalidRequestError
from dstack.server.services.artifacts import job_artifacts


@dataclass(frozen=True)
class ResolvedDep:
    """One external dependency of a job: the run it points to and the artifacts it gives."""

    ref: DepRef
    run_name: str
    artifacts: list[DepArtifacts]

    def digests(self) -> list[str]:
        """Manifest digests of everything it gives: part of the dependent job's cache key."""
        return sorted(m.digest() for a in self.artifacts for m in a.manifests)


async def resolve_request(
    session: AsyncSession, request: SubmitRunRequest
) -> list[list[ResolvedDep]]:
    """Per job of `request`, its external deps resolved, in the order declared.

    Raises `NotFoundError` for a tag that does not exist or a workflow with no successful
    run, before the caller has created anything.
    """
    memo: dict[str, ResolvedDep] = {}
    result = []
    for job in request.jobs:
        resolved = []
        for ref in job.external_deps:
            key = str(ref)
            if key not in memo:
                memo[key] = await resolve(session, ref, repo_id=request.repo.repo_id)
            resolved.append(memo[key])
        result.append(resolved)
    return result


async def resolve(session: AsyncSession, ref: DepRef, *, repo_id: str) -> ResolvedDep:
    if ref.repo:
        raise InvalidRequestError(
            f"'{ref}': dependencies on another repository are not supported",
            hint="depend on a tag or a workflow of this repository",
        )
    if ref.kind is DepKind.TAG:
        return await _resolve_tag(session, ref, repo_id)
    if ref.kind is DepKind.LATEST:
        return await _resolve_latest(session, ref, repo_id)
    raise InvalidRequestError(
        f"'{ref}' is a workflow of this run, not an external dependency",
        hint="list it as a job of the run, with `deps` pointing at it",
    )


async def _resolve_tag(session: AsyncSession, ref: DepRef, repo_id: str) -> ResolvedDep:
    tag = await session.get(TagRow, (repo_id, ref.tag or ""))
    if tag is None:
        raise NotFoundError(
            f"tag '{ref.tag}' does not exist",
            hint="see `dstack tags list` for the tags of this repository",
        )
    query = select(JobRow).where(JobRow.run_name == tag.run_name).order_by(JobRow.index)
    if ref.workflow:
        query = query.where(JobRow.workflow_name == ref.workflow)
    jobs = (await session.scalars(query)).all()
    if not jobs:
        raise NotFoundError(
            f"the run tagged '{ref.tag}' ({tag.run_name}) has no job of workflow '{ref.workflow}'",
            hint=f"depend on the whole run with `:{ref.tag}`, or tag a run of '{ref.workflow}'",
        )
    return ResolvedDep(ref, tag.run_name, _as_deps(await job_artifacts(session, jobs)))


async def _resolve_latest(session: AsyncSession, ref: DepRef, repo_id: str) -> ResolvedDep:
    candidates = await session.execute(
        select(RunRow.name)
        .join(JobRow, JobRow.run_name == RunRow.name)
        .where(
            RunRow.repo_id == repo_id,
            JobRow.workflow_name == ref.workflow,
            JobRow.status == JobStatus.DONE.value,
        )
        .order_by(RunRow.submitted_at.desc(), RunRow.name.desc())
    )
    for run_name in dict.fromkeys(name for (name,) in candidates):
        jobs = (
            await session.scalars(
                select(JobRow).where(JobRow.run_name == run_name).order_by(JobRow.index)
            )
        ).all()
        if all(j.status == JobStatus.DONE.value for j in jobs):
            own = [j for j in jobs if j.workflow_name == ref.workflow]
            return ResolvedDep(ref, run_name, _as_deps(await job_artifacts(session, own)))
    raise NotFoundError(
        f"workflow '{ref.workflow}' has no successful run yet",
        hint=f"run it first: dstack run {ref.workflow}",
    )


def _as_deps(artifacts: list[JobArtifacts]) -> list[DepArtifacts]:
    return [DepArtifacts.model_validate(a.model_dump()) for a in artifacts]
