"""Tags (add, move, delete, conflicts), run deletion with tags, and blob garbage collection."""

from __future__ import annotations

import pytest

from dstack.errors import ConflictError, NotFoundError
from dstack.models.digests import digest_bytes
from dstack.server.context import ServerContext
from dstack.server.services import artifacts, gc, runs, tags, workflow_caches
from dstack.server.services.claims import try_claim

from .conftest import FakeClock, art_job, register, run_to_done, stored_manifest, submission

pytestmark = pytest.mark.anyio


async def done_run(ctx: ServerContext, code_key: str = "t1", content: bytes = b"w") -> str:
    runner = await register(ctx)
    run = await runs.submit_run(ctx, request=submission(art_job(code_key=code_key)))
    await run_to_done(ctx, runner, content=content)
    return run.name


async def test_add_list_and_delete_a_tag(ctx: ServerContext) -> None:
    name = await done_run(ctx)

    tag = await tags.add_tag(ctx, name="v1", run_name=name)

    assert (tag.name, tag.run_name, tag.repo_id, tag.size) == (
        "v1",
        name,
        "github.com/acme/models",
        1,
    )
    assert [t.name for t in await tags.list_tags(ctx, repo_id="github.com/acme/models")] == ["v1"]
    assert await tags.list_tags(ctx, repo_id="other") == []
    await tags.delete_tag(ctx, name="v1", repo_id="github.com/acme/models")
    assert await tags.list_tags(ctx) == []
    with pytest.raises(NotFoundError, match="tag 'v1' does not exist"):
        await tags.delete_tag(ctx, name="v1", repo_id="github.com/acme/models")


async def test_tag_conflicts(ctx: ServerContext) -> None:
    name = await done_run(ctx)
    await tags.add_tag(ctx, name="v1", run_name=name)
    unfinished = await runs.submit_run(ctx, request=submission(art_job(code_key="t2")))

    with pytest.raises(ConflictError, match="already exists"):
        await tags.add_tag(ctx, name="v1", run_name=name)
    with pytest.raises(ConflictError, match="did not succeed"):
        await tags.add_tag(ctx, name="v2", run_name=unfinished.name)
    with pytest.raises(NotFoundError):
        await tags.add_tag(ctx, name="v3", run_name="no-such-run-1")


async def test_a_run_submitted_with_a_tag_gets_it_when_done_and_takes_it_over(
    ctx: ServerContext,
) -> None:
    first = await done_run(ctx)
    await tags.add_tag(ctx, name="best", run_name=first)
    runner = await register(ctx)
    request = submission(art_job(code_key="t2")).model_copy(update={"tag": "best"})
    second = await runs.submit_run(ctx, request=request)
    assert [t.run_name for t in await tags.list_tags(ctx)] == [first]

    await run_to_done(ctx, runner, content=b"better")

    assert [t.run_name for t in await tags.list_tags(ctx)] == [second.name]


async def test_a_failed_run_does_not_get_its_tag(ctx: ServerContext) -> None:
    request = submission(art_job()).model_copy(update={"tag": "best"})
    run = await runs.submit_run(ctx, request=request)
    await runs.stop_run(ctx, name=run.name)

    assert await tags.list_tags(ctx) == []


async def test_a_tagged_run_cannot_be_deleted_until_the_tag_is(ctx: ServerContext) -> None:
    ctx.settings.gc_grace_seconds = 0
    name = await done_run(ctx)
    await tags.add_tag(ctx, name="v1", run_name=name)

    with pytest.raises(ConflictError, match="tagged 'v1'") as refused:
        await runs.delete_run(ctx, name=name)
    assert refused.value.hint == "delete the tag first: dstack tags delete v1"
    await tags.delete_tag(ctx, name="v1", repo_id="github.com/acme/models")
    await runs.delete_run(ctx, name=name)
    assert await runs.list_runs(ctx, all=True) == []


async def test_deleting_a_run_reclaims_only_its_unreferenced_blobs(ctx: ServerContext) -> None:
    ctx.settings.gc_grace_seconds = 0
    gone = await done_run(ctx, "t1", b"only in the deleted run")
    kept = await done_run(ctx, "t2", b"shared")
    # The same content in the deleted run too: still referenced by `kept`.
    runner = await register(ctx)
    shared = await runs.submit_run(ctx, request=submission(art_job(code_key="t3")))
    await run_to_done(ctx, runner, content=b"shared")
    [own] = (await runs.run_artifacts(ctx, run_name=gone))[0].manifests
    [common] = (await runs.run_artifacts(ctx, run_name=kept))[0].manifests

    first = await runs.delete_run(ctx, name=gone)
    second = await runs.delete_run(ctx, name=shared.name)

    assert not ctx.blobs.exists(own.files[0].digest)
    assert ctx.blobs.exists(common.files[0].digest)
    # The answer counts what each deletion left unreferenced: the shared blob is not.
    assert (first.freed_bytes, second.freed_bytes) == (len(b"only in the deleted run"), 0)
    assert first.gc_grace_seconds == 0


async def test_the_freed_bytes_are_counted_before_the_grace_period_ends(
    ctx: ServerContext,
) -> None:
    ctx.settings.gc_grace_seconds = 3600
    name = await done_run(ctx, "t1", b"kept an hour")
    [manifest] = (await runs.run_artifacts(ctx, run_name=name))[0].manifests

    deleted = await runs.delete_run(ctx, name=name)

    assert (deleted.freed_bytes, deleted.gc_grace_seconds) == (len(b"kept an hour"), 3600)
    assert ctx.blobs.exists(manifest.files[0].digest)  # until garbage collection passes


async def test_gc_keeps_code_caches_and_young_blobs(ctx: ServerContext, clock: FakeClock) -> None:
    ctx.settings.gc_grace_seconds = 3600
    bundle = digest_bytes(b"bundle")
    ctx.blobs.put_bytes(b"bundle", bundle)
    request = submission(art_job())
    request.repo.bundle_digest = bundle
    await runs.submit_run(ctx, request=request)
    runner = await register(ctx)
    assignment = await try_claim(ctx, runner_id=runner)
    assert assignment is not None
    cache = stored_manifest(ctx.blobs, "~/.cache/pip", b"wheel")
    await workflow_caches.save_cache(
        ctx, job_id=assignment.job_id, manifest=cache, runner_id=runner
    )
    # An upload whose manifest has not arrived yet, and a blob only asked about.
    in_flight = digest_bytes(b"uploading")
    ctx.blobs.put_bytes(b"uploading", in_flight)
    announced = digest_bytes(b"announced")
    ctx.blobs.put_bytes(b"announced", announced)

    assert await gc.collect(ctx) == []
    clock.advance(3000)
    assert await artifacts.missing_blobs(ctx, digests=[announced]) == []
    clock.advance(1000)
    assert await gc.collect(ctx) == [in_flight]

    assert ctx.blobs.exists(bundle)
    assert ctx.blobs.exists(cache.files[0].digest)
    assert ctx.blobs.exists(announced)
    clock.advance(3600)
    assert await gc.collect(ctx) == [announced]


async def test_pruning_caches_reclaims_their_blobs(ctx: ServerContext) -> None:
    ctx.settings.gc_grace_seconds = 0
    await runs.submit_run(ctx, request=submission(art_job()))
    runner = await register(ctx)
    assignment = await try_claim(ctx, runner_id=runner)
    assert assignment is not None
    cache = stored_manifest(ctx.blobs, "./data", b"cached data")
    await workflow_caches.save_cache(
        ctx, job_id=assignment.job_id, manifest=cache, runner_id=runner
    )

    await workflow_caches.prune_caches(ctx, repo_id="github.com/acme/models", workflow="train")

    assert not ctx.blobs.exists(cache.files[0].digest)
