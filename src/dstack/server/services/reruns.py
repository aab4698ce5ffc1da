"""Re-runs: a run submitted again exactly as it was submitted.

The run keeps its `SubmitRunRequest` (`RunRow.submission`): the same code (bundle, diff and
each job's code key), workflows, arguments, variables, tag and `reload`. External deps
(`tag`, `X:latest`) are *not* resolved again: the new run gets the artifacts the original
got, so a re-run repeats the original's inputs (and the cache applies as it would to them).
Secrets are looked up again, and the code must still be on the server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select

from dstack.errors import ConflictError, MissingBlobsError, NotFoundError
from dstack.models.artifacts import DepArtifacts
from dstack.models.protocol import SubmitRunRequest
from dstack.models.run import Run
from dstack.server.context import ServerContext
from dstack.server.db.models import JobRow, RunRow
from dstack.server.services import runs as run_service
from dstack.server.services.dependencies import ResolvedDep

_NOT_KEPT_HINT = "submit it again with `dstack run`"


@dataclass(frozen=True)
class RerunInfo:
    possible: bool  # the run kept its submission
    of: str | None  # the run this one repeats, if it is a re-run


async def info(ctx: ServerContext, name: str) -> RerunInfo:
    async with ctx.read() as session:
        submission = await session.scalar(select(RunRow.submission).where(RunRow.name == name))
    if not isinstance(submission, dict):
        return RerunInfo(False, None)
    of = submission.get("rerun_of")
    return RerunInfo(True, of if isinstance(of, str) else None)


async def rerun(ctx: ServerContext, *, name: str, user: str, reload: bool = False) -> Run:
    """Submit run `name` again, as `user`; return the new run. `reload`: run every job even
    when an earlier result fits (the original's own `reload` holds either way)."""
    request, pinned = await _kept(ctx, name)
    if reload:
        request = request.model_copy(update={"reload": True})
    try:
        return await run_service.submit_run(
            ctx, request=request, user=user, pinned=pinned, rerun_of=name
        )
    except MissingBlobsError as e:
        raise ConflictError(
            f"the code of run '{name}' is no longer on the server", hint=_NOT_KEPT_HINT
        ) from e


async def _kept(ctx: ServerContext, name: str) -> tuple[SubmitRunRequest, list[list[ResolvedDep]]]:
    async with ctx.read() as session:
        run = await session.get(RunRow, name)
        if run is None:
            raise NotFoundError(f"run '{name}' not found", hint="see `dstack ps -a`")
        jobs = (
            await session.scalars(
                select(JobRow).where(JobRow.run_name == name).order_by(JobRow.index)
            )
        ).all()
        submission = run.submission
    if not isinstance(submission, dict):
        raise ConflictError(
            f"run '{name}' cannot be re-run: it was uploaded, imported or submitted before "
            "the server kept submissions",
            hint=_NOT_KEPT_HINT,
        )
    try:
        request = SubmitRunRequest.model_validate(submission["request"])
        pinned = [
            _pinned(request, index, kept, jobs[index].external_artifacts or [])
            for index, kept in enumerate(submission["externals"])
        ]
    except (KeyError, IndexError, TypeError, ValidationError) as e:
        raise ConflictError(
            f"run '{name}' cannot be re-run: its kept submission is not readable",
            hint=_NOT_KEPT_HINT,
        ) from e
    if len(pinned) != len(request.jobs):
        raise ConflictError(f"run '{name}' cannot be re-run: its jobs changed", hint=_NOT_KEPT_HINT)
    return request, pinned


def _pinned(
    request: SubmitRunRequest, index: int, kept: list[dict[str, Any]], stored: list[Any]
) -> list[ResolvedDep]:
    """Job `index`'s external deps as they resolved for the original run: its stored
    `external_artifacts`, cut per dep by the kept counts."""
    refs = request.jobs[index].external_deps
    if len(refs) != len(kept):
        raise IndexError("external deps and their resolutions differ")
    resolved = []
    start = 0
    for ref, entry in zip(refs, kept, strict=True):
        count = int(entry["count"])
        artifacts = [DepArtifacts.model_validate(a) for a in stored[start : start + count]]
        resolved.append(ResolvedDep(ref, str(entry["run_name"]), artifacts))
        start += count
    return resolved
