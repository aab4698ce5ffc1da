"""Cache keys, reuse of earlier results, and why a job will run.

A job's cache key is the digest (`dstack.models.digests`) of the canonical JSON of: its
repository's id, its spec without `resources` (and without the apps' `url_query`, which holds
per-run tokens), the code
it sees (`code_key`), the sorted cache keys of its in-run dependencies, and the manifest
digests of its resolved external dependencies. The spec's `env` already holds the run's
variables. A result is reused only from a run of the same repository (the key says so, and
the lookup checks it too): a cache hit, or a plan naming a run, never crosses repositories.
Keys are computed here, never taken from a client (imported runs carry none).

`decide` is the one place that says, for every job of a request, whether an earlier result
is reused and, if not, why the job runs. `submit_run` applies its answer; `plan_run` only
reports it. Reasons are short, parseable strings, joined with "; " when several apply:

- `cached` (with `cached_from` = the run that produced the results)
- `--reload`
- `not cacheable: no artifacts`
- `dependency 'NAME' will run`
- `no earlier run`
- `code changed (OLD..NEW)`: the code keys (git trees) of the newest earlier done job of
  the same workflow and of this one; `git diff OLD NEW` shows what changed
- `spec changed: FIELD, FIELD` (top-level `JobSpec` fields) / `env changed: NAME, NAME`
- `dependency 'NAME' changed`
- `tag 'T' points to another run` / `'X:latest' is another run` / `'REF' changed`
- `no reusable earlier result` (inputs equal, but nothing to reuse)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from dstack.models.artifacts import JobExplanation
from dstack.models.digests import digest_bytes
from dstack.models.job import JobSpec, JobStatus, TerminationReason
from dstack.models.protocol import JobSubmission, SubmitRunRequest
from dstack.models.workflow import DepKind
from dstack.server.db.models import JobRow, RunRow
from dstack.server.services import jobs as job_service
from dstack.server.services.artifacts import copy_manifests
from dstack.server.services.dependencies import ResolvedDep

CACHED = "cached"


class ExternalInput(BaseModel):
    ref: str
    kind: str
    tag: str | None = None
    run_name: str
    digests: list[str]


class CacheInputs(BaseModel):
    """What a job's cache key was made of, besides its spec (stored on the job)."""

    code_key: str
    deps: dict[str, str] = Field(default_factory=dict, description="dep name → its key")
    external: list[ExternalInput] = Field(default_factory=list)


@dataclass
class Decision:
    """For one job: its key, and either the job it reuses (`origin`) or why it runs."""

    index: int
    workflow_name: str | None
    cache_key: str
    inputs: CacheInputs
    origin: JobRow | None
    reason: str

    @property
    def origin_run(self) -> str | None:
        """The run that produced what this job reuses (following earlier reuses)."""
        if self.origin is None:
            return None
        return self.origin.reused_from or self.origin.run_name

    @property
    def origin_job(self) -> str | None:
        if self.origin is None:
            return None
        return self.origin.reused_job_id or self.origin.id

    def explanation(self) -> JobExplanation:
        return JobExplanation(
            index=self.index,
            workflow_name=self.workflow_name,
            cache_key=self.cache_key,
            cached_from=self.origin_run,
            reason=self.reason,
        )


def spec_fingerprint(spec: JobSpec) -> dict[str, Any]:
    """The part of a spec that decides what a job produces."""
    data = spec.model_dump(mode="json", exclude={"resources"})
    # `retry` unset reads as 0, its meaning before it could be unset: keys stay the same.
    data["retry"] = data.get("retry") or 0
    for app in data.get("apps", []):
        app.pop("url_query", None)
    return data


def cache_key(repo_id: str, spec: JobSpec, inputs: CacheInputs) -> str:
    payload = {
        "repo_id": repo_id,
        "spec": spec_fingerprint(spec),
        "code_key": inputs.code_key,
        "deps": sorted(inputs.deps.values()),
        "external": [e.digests for e in inputs.external],
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return digest_bytes(canonical.encode())


def dep_name(request: SubmitRunRequest, index: int) -> str:
    return request.jobs[index].workflow_name or f"job {index}"


async def decide(
    session: AsyncSession,
    request: SubmitRunRequest,
    externals: list[list[ResolvedDep]],
) -> list[Decision]:
    """One decision per job of `request`, in order. Reads only."""
    decisions: list[Decision] = []
    for index, job in enumerate(request.jobs):
        inputs = CacheInputs(
            code_key=job.code_key,
            deps={dep_name(request, d): decisions[d].cache_key for d in job.deps},
            external=[_external_input(r) for r in externals[index]],
        )
        key = cache_key(request.repo.repo_id, job.spec, inputs)
        decision = Decision(index, job.workflow_name, key, inputs, None, "")
        await _decide_one(session, request, job, decision, decisions)
        decisions.append(decision)
        _whole_gang(request, decisions)
    return decisions


def _whole_gang(request: SubmitRunRequest, decisions: list[Decision]) -> None:
    """A multi-node job is reused only with its whole gang: once its last node is decided,
    a gang some node of which runs runs entirely (its nodes start together)."""
    index = len(decisions) - 1
    spec = request.jobs[index].spec
    nodes = spec.resources.nodes
    if nodes <= 1 or spec.node_rank != nodes - 1:
        return
    gang = decisions[index - nodes + 1 :]
    if all(d.origin is not None for d in gang) or all(d.origin is None for d in gang):
        return
    for decision in gang:
        if decision.origin is not None:
            decision.origin = None
            decision.reason = "another node of its multi-node run runs"


def _external_input(resolved: ResolvedDep) -> ExternalInput:
    return ExternalInput(
        ref=str(resolved.ref),
        kind=resolved.ref.kind.value,
        tag=resolved.ref.tag,
        run_name=resolved.run_name,
        digests=resolved.digests(),
    )


async def _decide_one(
    session: AsyncSession,
    request: SubmitRunRequest,
    job: JobSubmission,
    decision: Decision,
    earlier: list[Decision],
) -> None:
    running = [dep_name(request, d) for d in job.deps if earlier[d].origin is None]
    if request.reload:
        decision.reason = "--reload"
    elif not job.spec.artifacts:
        decision.reason = "not cacheable: no artifacts"
    elif running:
        decision.reason = "; ".join(f"dependency '{name}' will run" for name in running)
    else:
        decision.origin = await find_reusable(
            session, decision.cache_key, repo_id=request.repo.repo_id
        )
        if decision.origin is not None:
            decision.reason = CACHED
        else:
            decision.reason = await explain_miss(session, request, job, decision.inputs)


async def find_reusable(session: AsyncSession, key: str, *, repo_id: str) -> JobRow | None:
    """The newest done job with this key in a run of `repo_id`. Its manifests live as long
    as it does (they are deleted with it), and a cached job holds its own copies, so done
    means reusable."""
    query = (
        select(JobRow)
        .join(RunRow, RunRow.name == JobRow.run_name)
        .where(JobRow.cache_key == key, JobRow.status == JobStatus.DONE.value)
        .where(RunRow.repo_id == repo_id)
        .order_by(JobRow.finished_at.desc())
        .limit(1)
    )
    return (await session.scalars(query)).first()


async def explain_miss(
    session: AsyncSession, request: SubmitRunRequest, job: JobSubmission, inputs: CacheInputs
) -> str:
    """Why nothing can be reused: what differs from the newest done job of the same
    workflow in the same repository."""
    previous = await _previous(session, request.repo.repo_id, job.workflow_name)
    if previous is None or previous.cache_inputs is None:
        return "no earlier run"
    old = CacheInputs.model_validate(previous.cache_inputs)
    old_spec = spec_fingerprint(JobSpec.model_validate(previous.spec))
    reasons = [
        *_code_diff(old, inputs),
        *_spec_diff(old_spec, spec_fingerprint(job.spec)),
        *(f"dependency '{n}' changed" for n, k in inputs.deps.items() if old.deps.get(n) != k),
        *_external_diff(old, inputs),
    ]
    return "; ".join(reasons) or "no reusable earlier result"


async def _previous(session: AsyncSession, repo_id: str, workflow: str | None) -> JobRow | None:
    query = (
        select(JobRow)
        .join(RunRow, RunRow.name == JobRow.run_name)
        .where(RunRow.repo_id == repo_id, JobRow.status == JobStatus.DONE.value)
        .where(JobRow.workflow_name == workflow if workflow else JobRow.workflow_name.is_(None))
        .order_by(JobRow.finished_at.desc())
        .limit(1)
    )
    return (await session.scalars(query)).first()


def _code_diff(old: CacheInputs, new: CacheInputs) -> list[str]:
    if old.code_key == new.code_key:
        return []
    return [f"code changed ({old.code_key}..{new.code_key})"]


def _spec_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    fields = sorted(k for k in old.keys() | new.keys() if k != "env" and old.get(k) != new.get(k))
    reasons = [f"spec changed: {', '.join(fields)}"] if fields else []
    old_env, new_env = old.get("env") or {}, new.get("env") or {}
    names = sorted(k for k in old_env.keys() | new_env.keys() if old_env.get(k) != new_env.get(k))
    if names:
        reasons.append(f"env changed: {', '.join(names)}")
    return reasons


def _external_diff(old: CacheInputs, new: CacheInputs) -> list[str]:
    before = {e.ref: e for e in old.external}
    reasons = []
    for ext in new.external:
        prior = before.get(ext.ref)
        if prior is None or prior.digests == ext.digests:
            continue
        if prior.run_name == ext.run_name:
            reasons.append(f"'{ext.ref}' changed")
        elif ext.kind == DepKind.TAG.value:
            reasons.append(f"tag '{ext.tag}' points to another run")
        else:
            reasons.append(f"'{ext.ref}' is another run")
    return reasons


async def apply_hit(session: AsyncSession, job: JobRow, decision: Decision, now: datetime) -> None:
    """Finish a new job (flushed, `submitted`) as cached: copies of the origin's manifests,
    `done` with reason `cached` through the one status function."""
    assert decision.origin is not None
    await copy_manifests(session, decision.origin.id, job.id, now)
    await job_service.set_status(
        session,
        job,
        JobStatus.DONE,
        now=now,
        reason=TerminationReason.CACHED,
        message=f"reused the results of run {decision.origin_run}",
    )
