"""Cache keys and reuse at submit; plan explanations."""

from __future__ import annotations

import pytest

from dstack.models.job import JobStatus, TerminationReason
from dstack.models.protocol import SubmitRunRequest
from dstack.models.workflow import DepKind, DepRef
from dstack.server.context import ServerContext
from dstack.server.services import runs, tags

from .conftest import FakeClock, art_job, register, run_to_done, submission

pytestmark = pytest.mark.anyio


def chain(code_key: str = "tree-1", **train: object) -> SubmitRunRequest:
    return submission(
        art_job("prepare", code_key=code_key),
        art_job("train", deps=[0], code_key=code_key, **train),  # type: ignore[arg-type]
        art_job("evaluate", deps=[1], code_key=code_key),
    )


async def first_run(
    ctx: ServerContext, request: SubmitRunRequest, content: bytes = b"weights"
) -> str:
    runner = await register(ctx)
    run = await runs.submit_run(ctx, request=request)
    await run_to_done(ctx, runner, content=content)
    assert (await runs.get_run(ctx, name=run.name)).status is JobStatus.DONE
    return run.name


async def test_identical_chain_is_finished_at_submit_reusing_the_first_run(
    ctx: ServerContext, clock: FakeClock
) -> None:
    origin = await first_run(ctx, chain())
    clock.advance(60)

    again = await runs.submit_run(ctx, request=chain())

    assert again.status is JobStatus.DONE
    assert [(j.status, j.reason, j.reused_from) for j in again.jobs] == [
        (JobStatus.DONE, TerminationReason.CACHED, origin)
    ] * 3
    produced = await runs.run_artifacts(ctx, run_name=origin)
    reused = await runs.run_artifacts(ctx, run_name=again.name)
    assert reused == produced
    assert {a.run_name for a in reused} == {origin}


async def test_a_cached_run_is_itself_reusable_and_points_at_the_origin(
    ctx: ServerContext, clock: FakeClock
) -> None:
    origin = await first_run(ctx, chain())
    clock.advance(1)
    await runs.submit_run(ctx, request=chain())
    clock.advance(1)

    third = await runs.submit_run(ctx, request=chain())

    assert {j.reused_from for j in third.jobs} == {origin}


@pytest.mark.parametrize(
    ("change", "runs_again"),
    [
        ({"code_key": "tree-2"}, [True, True, True]),
        ({"train": {"commands": ["python train.py --fast"]}}, [False, True, True]),
        ({"train": {"env": {"EPOCHS": "3"}}}, [False, True, True]),
        ({"train": {"cpu": 2}}, [False, False, False]),
    ],
)
async def test_only_what_changed_and_what_depends_on_it_runs_again(
    ctx: ServerContext, change: dict[str, object], runs_again: list[bool]
) -> None:
    await first_run(ctx, chain())
    request = chain(
        code_key=str(change.get("code_key", "tree-1")),
        **change.get("train", {}),  # type: ignore[arg-type]
    )

    run = await runs.submit_run(ctx, request=request)

    assert [j.status is not JobStatus.DONE for j in run.jobs] == runs_again


async def test_a_job_without_artifacts_always_runs(ctx: ServerContext) -> None:
    request = submission(art_job("hello", artifacts=[]))
    await first_run(ctx, request)

    again = await runs.submit_run(ctx, request=request)

    assert again.jobs[0].status is JobStatus.SUBMITTED
    assert again.jobs[0].reused_from is None


async def test_reload_runs_everything(ctx: ServerContext) -> None:
    await first_run(ctx, chain())

    again = await runs.submit_run(ctx, request=chain().model_copy(update={"reload": True}))

    assert [j.status for j in again.jobs] == [JobStatus.SUBMITTED] * 3


async def test_a_failed_job_is_not_reused(ctx: ServerContext) -> None:
    run = await runs.submit_run(ctx, request=submission(art_job()))
    await runs.stop_run(ctx, name=run.name)

    again = await runs.submit_run(ctx, request=submission(art_job()))

    assert again.jobs[0].status is JobStatus.SUBMITTED


async def test_cached_artifacts_survive_deleting_the_origin_run(
    ctx: ServerContext, clock: FakeClock
) -> None:
    ctx.settings.gc_grace_seconds = 0
    origin = await first_run(ctx, chain())
    again = await runs.submit_run(ctx, request=chain())
    before = await runs.run_artifacts(ctx, run_name=again.name)

    await runs.delete_run(ctx, name=origin)

    assert await runs.run_artifacts(ctx, run_name=again.name) == before
    digest = before[0].manifests[0].files[0].digest
    assert ctx.blobs.exists(digest)
    third = await runs.submit_run(ctx, request=chain())
    assert {j.reused_from for j in third.jobs} == {origin}


async def test_tag_of_a_fully_cached_run_moves_to_it(ctx: ServerContext) -> None:
    await first_run(ctx, chain().model_copy(update={"tag": "best"}))

    again = await runs.submit_run(ctx, request=chain().model_copy(update={"tag": "best"}))

    assert [(t.name, t.run_name) for t in await tags.list_tags(ctx)] == [("best", again.name)]


# --- plan ---------------------------------------------------------------------------------
async def reasons(ctx: ServerContext, request: SubmitRunRequest) -> list[tuple[str | None, str]]:
    plan = await runs.plan_run(ctx, request=request)
    return [(j.cached_from, j.reason) for j in plan.jobs]


async def test_plan_creates_nothing_and_says_no_earlier_run(ctx: ServerContext) -> None:
    assert await reasons(ctx, chain()) == [
        (None, "no earlier run"),
        (None, "dependency 'prepare' will run"),
        (None, "dependency 'train' will run"),
    ]
    assert await runs.list_runs(ctx, all=True) == []


async def test_plan_names_the_run_it_reuses(ctx: ServerContext) -> None:
    origin = await first_run(ctx, chain())

    assert await reasons(ctx, chain()) == [(origin, "cached")] * 3
    plan = await runs.plan_run(ctx, request=chain())
    run = await runs.get_run(ctx, name=origin)
    assert [j.cache_key for j in plan.jobs] == [j.cache_key for j in run.jobs]


async def test_plan_explains_code_spec_and_env_changes(ctx: ServerContext) -> None:
    await first_run(ctx, chain())

    code = await reasons(ctx, chain(code_key="tree-2"))
    spec = await reasons(ctx, chain(commands=["python t.py"], env={"EPOCHS": "3"}))
    reload = await reasons(ctx, chain().model_copy(update={"reload": True}))

    assert code[0] == (None, "code changed (tree-1..tree-2)")
    assert spec[1] == (None, "spec changed: commands; env changed: EPOCHS")
    assert spec[2] == (None, "dependency 'train' will run")
    assert reload == [(None, "--reload")] * 3


async def test_the_run_keeps_the_plans_explanation(ctx: ServerContext) -> None:
    origin = await first_run(ctx, chain())
    request = chain(commands=["python t.py"])
    planned = await reasons(ctx, request)

    run = await runs.submit_run(ctx, request=request)
    again = await runs.get_run(ctx, name=run.name)  # read back from the database

    assert [(j.reused_from, j.cache_reason) for j in again.jobs] == planned
    assert planned == [
        (origin, "cached"),
        (None, "spec changed: commands"),
        (None, "dependency 'train' will run"),
    ]


async def test_plan_says_when_a_dependency_changed(ctx: ServerContext) -> None:
    await first_run(ctx, chain())
    # The new `prepare` is already done in another run, so `train` need not wait for it,
    # but its key differs from the one the last `train` saw.
    await first_run(ctx, submission(art_job("prepare", commands=["python prepare.py -v"])))
    request = chain()
    request.jobs[0] = art_job("prepare", commands=["python prepare.py -v"])

    assert (await reasons(ctx, request))[1] == (None, "dependency 'prepare' changed")


async def test_plan_says_not_cacheable(ctx: ServerContext) -> None:
    assert await reasons(ctx, submission(art_job("hello", artifacts=[]))) == [
        (None, "not cacheable: no artifacts")
    ]


async def test_plan_says_a_tag_points_to_another_run(ctx: ServerContext) -> None:
    def tagged() -> SubmitRunRequest:
        ref = DepRef(kind=DepKind.TAG, tag="data")
        return submission(art_job("train", external=[ref]))

    await first_run(ctx, submission(art_job("prepare")).model_copy(update={"tag": "data"}))
    await first_run(ctx, tagged())
    assert (await reasons(ctx, tagged()))[0][1] == "cached"
    await first_run(
        ctx,
        submission(art_job("prepare", code_key="tree-9")).model_copy(update={"tag": "data"}),
        content=b"other data",
    )

    assert await reasons(ctx, tagged()) == [(None, "tag 'data' points to another run")]
