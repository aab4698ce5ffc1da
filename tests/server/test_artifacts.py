"""Manifests, external deps, assignments, uploads and workflow caches (services, no HTTP)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select

from dstack.errors import ConflictError, NotFoundError, StorageError
from dstack.models.artifacts import FileEntry, Manifest
from dstack.models.digests import digest_bytes
from dstack.models.job import JobStatus
from dstack.models.protocol import JobStatusUpdate, UploadRunRequest
from dstack.models.repo import RepoRef
from dstack.models.workflow import DepKind, DepRef
from dstack.server.app import running_context
from dstack.server.context import ServerContext
from dstack.server.db.models import BlobTouchRow
from dstack.server.errors import Forbidden
from dstack.server.services import artifacts, claims, runs, tags, uploads, workflow_caches
from dstack.server.services import jobs as job_service
from dstack.server.settings import ServerSettings
from dstack.storage.local import LocalBlobStore

from .conftest import FakeClock, art_job, register, run_to_done, stored_manifest, submission

pytestmark = pytest.mark.anyio


async def claimed(ctx: ServerContext) -> tuple[str, str]:
    runner = await register(ctx)
    await runs.submit_run(ctx, request=submission(art_job()))
    assignment = await claims.try_claim(ctx, runner_id=runner)
    assert assignment is not None
    return runner, assignment.job_id


async def test_a_manifest_replaces_the_previous_one_of_its_path(ctx: ServerContext) -> None:
    runner, job_id = await claimed(ctx)
    first = stored_manifest(ctx.blobs, "out", b"epoch 1")
    second = stored_manifest(ctx.blobs, "out", b"epoch 2")
    logs = stored_manifest(ctx.blobs, "logs", b"lines")

    for manifest in (first, logs, second):
        await artifacts.save_manifest(ctx, job_id=job_id, manifest=manifest, runner_id=runner)

    run = (await runs.list_runs(ctx))[0]
    [produced] = await runs.run_artifacts(ctx, run_name=run.name)
    assert produced.manifests == [logs, second]
    assert (produced.job_id, produced.run_name, produced.workflow_name) == (
        job_id,
        run.name,
        "train",
    )


async def test_a_manifest_from_another_runner_or_with_missing_blobs_is_refused(
    ctx: ServerContext,
) -> None:
    runner, job_id = await claimed(ctx)
    absent = digest_bytes(b"never uploaded")
    bad = Manifest(path="out", files=[FileEntry(path="x", size=1, mode=0o644, digest=absent)])

    with pytest.raises(Forbidden, match="not held by this runner"):
        await artifacts.save_manifest(ctx, job_id=job_id, manifest=bad, runner_id="other")
    with pytest.raises(StorageError, match=f"not stored: {absent}"):
        await artifacts.save_manifest(ctx, job_id=job_id, manifest=bad, runner_id=runner)
    with pytest.raises(NotFoundError):
        await artifacts.save_manifest(
            ctx, job_id="gone", manifest=stored_manifest(ctx.blobs), runner_id=runner
        )


async def test_missing_blobs_lists_what_the_store_lacks(ctx: ServerContext) -> None:
    present = stored_manifest(ctx.blobs).files[0].digest
    absent = digest_bytes(b"absent")

    assert await artifacts.missing_blobs(ctx, digests=[present, absent, absent]) == [absent]


async def test_concurrent_touches_of_one_blob_both_succeed(
    ctx: ServerContext, clock: FakeClock
) -> None:
    digest = digest_bytes(b"shared")
    await artifacts.touch_blobs(ctx, [digest])
    clock.advance(60)

    # Two requests announcing the same new and old blobs at once (two server processes).
    fresh = digest_bytes(b"fresh")
    await asyncio.gather(*(artifacts.touch_blobs(ctx, [digest, fresh]) for _ in range(8)))

    async with ctx.read() as session:
        touched = dict(
            (await session.execute(select(BlobTouchRow.digest, BlobTouchRow.touched_at))).all()
        )
    assert touched == {digest: clock(), fresh: clock()}


async def test_a_job_moves_through_uploading_before_done(ctx: ServerContext) -> None:
    runner = await register(ctx)
    run = await runs.submit_run(ctx, request=submission(art_job()))
    await run_to_done(ctx, runner)

    history = (await runs.get_run(ctx, name=run.name)).jobs[0].history
    assert [h.status for h in history][-3:] == [
        JobStatus.RUNNING,
        JobStatus.UPLOADING,
        JobStatus.DONE,
    ]


# --- assignment -------------------------------------------------------------------------------
async def test_assignment_carries_in_run_deps_caches_and_storage(ctx: ServerContext) -> None:
    runner = await register(ctx)
    run = await runs.submit_run(
        ctx, request=submission(art_job("prepare"), art_job("train", deps=[0]))
    )
    first = await claims.try_claim(ctx, runner_id=runner)
    assert first is not None
    assert first.deps == []
    assert first.caches == []
    data = stored_manifest(ctx.blobs, "out", b"data")
    pip = stored_manifest(ctx.blobs, "~/.cache/pip", b"wheel")
    await artifacts.save_manifest(ctx, job_id=first.job_id, manifest=data, runner_id=runner)
    await workflow_caches.save_cache(ctx, job_id=first.job_id, manifest=pip, runner_id=runner)
    await job_service.report_status(
        ctx, job_id=first.job_id, update=JobStatusUpdate(status=JobStatus.DONE), runner_id=runner
    )

    second = await claims.try_claim(ctx, runner_id=runner)

    assert second is not None
    assert [(d.job_id, d.run_name, d.workflow_name, d.manifests) for d in second.deps] == [
        (first.job_id, run.name, "prepare", [data])
    ]
    assert second.caches == []  # caches belong to `prepare`, not `train`
    assert second.storage.kind == "http"
    again = art_job("prepare", code_key="t2", cache=["~/.cache/pip"])
    again_run = await runs.submit_run(ctx, request=submission(again))
    third = await claims.try_claim(ctx, runner_id=runner)
    assert third is not None
    assert third.run_name == again_run.name
    assert third.caches == [pip]


async def test_assignment_of_a_job_after_a_cached_dep_gets_the_origin_artifacts(
    ctx: ServerContext,
) -> None:
    runner = await register(ctx)
    origin = await runs.submit_run(ctx, request=submission(art_job("prepare")))
    await run_to_done(ctx, runner)
    request = submission(art_job("prepare"), art_job("train", deps=[0], artifacts=[]))

    run = await runs.submit_run(ctx, request=request)
    assignment = await claims.try_claim(ctx, runner_id=runner)

    assert assignment is not None
    assert assignment.run_name == run.name
    assert [(d.job_id, d.run_name) for d in assignment.deps] == [(origin.jobs[0].id, origin.name)]


async def test_a_local_store_is_handed_to_runners_as_a_folder(
    settings: ServerSettings, clock: FakeClock, tmp_path: Path
) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    async with running_context(settings, blobs=store, clock=clock, background=False) as ctx:
        runner = await register(ctx)
        await runs.submit_run(ctx, request=submission(art_job()))
        assignment = await claims.try_claim(ctx, runner_id=runner)

    assert assignment is not None
    assert (assignment.storage.kind, assignment.storage.path) == (
        "local",
        str((tmp_path / "blobs").resolve()),
    )


# --- external deps ----------------------------------------------------------------------------
async def test_tag_and_latest_deps_resolve_to_earlier_runs(ctx: ServerContext) -> None:
    runner = await register(ctx)
    tagged = await runs.submit_run(
        ctx,
        request=submission(art_job("prepare"), art_job("extra", artifacts=["x"])).model_copy(
            update={"tag": "data"}
        ),
    )
    await run_to_done(ctx, runner)
    refs = [
        DepRef(kind=DepKind.TAG, tag="data"),
        DepRef(kind=DepKind.TAG, tag="data", workflow="extra"),
        DepRef(kind=DepKind.LATEST, workflow="prepare"),
    ]
    await runs.submit_run(ctx, request=submission(art_job("train", external=refs, artifacts=[])))

    assignment = await claims.try_claim(ctx, runner_id=runner)

    assert assignment is not None
    assert [(d.run_name, d.workflow_name) for d in assignment.deps] == [
        (tagged.name, "prepare"),
        (tagged.name, "extra"),
        (tagged.name, "extra"),
        (tagged.name, "prepare"),
    ]


async def test_latest_skips_runs_that_did_not_fully_succeed(ctx: ServerContext) -> None:
    runner = await register(ctx)
    good = await runs.submit_run(ctx, request=submission(art_job("prepare")))
    await run_to_done(ctx, runner)
    # `prepare` succeeds again (new code) but the run's other job is stopped.
    partial = await runs.submit_run(
        ctx, request=submission(art_job("prepare", code_key="t2"), art_job("b", deps=[0]))
    )
    first = await claims.try_claim(ctx, runner_id=runner)
    assert first is not None
    await job_service.report_status(
        ctx, job_id=first.job_id, update=JobStatusUpdate(status=JobStatus.DONE), runner_id=runner
    )
    await runs.stop_run(ctx, name=partial.name)
    ref = DepRef(kind=DepKind.LATEST, workflow="prepare")

    await runs.submit_run(ctx, request=submission(art_job("t", external=[ref], artifacts=[])))

    assignment = await claims.try_claim(ctx, runner_id=runner)
    assert assignment is not None
    assert [d.run_name for d in assignment.deps] == [good.name]


@pytest.mark.parametrize(
    ("ref", "message", "hint"),
    [
        (DepRef(kind=DepKind.TAG, tag="nope"), "tag 'nope' does not exist", "dstack tags list"),
        (
            DepRef(kind=DepKind.LATEST, workflow="prepare"),
            "workflow 'prepare' has no successful run yet",
            "dstack run prepare",
        ),
    ],
)
async def test_a_missing_external_dep_fails_the_submit_and_creates_nothing(
    ctx: ServerContext, ref: DepRef, message: str, hint: str
) -> None:
    request = submission(art_job("prepare"), art_job("train", external=[ref]))

    with pytest.raises(NotFoundError) as failed:
        await runs.submit_run(ctx, request=request)
    with pytest.raises(NotFoundError):
        await runs.plan_run(ctx, request=request)

    assert failed.value.message == message
    assert hint in (failed.value.hint or "")
    assert await runs.list_runs(ctx, all=True) == []


# --- uploads and workflow caches ------------------------------------------------------------------
def upload(ctx: ServerContext, tag: str = "dataset") -> UploadRunRequest:
    return UploadRunRequest(
        tag=tag,
        repo=RepoRef(repo_id="github.com/acme/models", tree="0" * 40),
        manifests=[stored_manifest(ctx.blobs, "data", b"rows")],
    )


async def test_upload_creates_a_done_tagged_run_usable_as_a_dep(ctx: ServerContext) -> None:
    request = upload(ctx)

    run = await uploads.upload_run(ctx, request=request)

    assert (run.status, run.provider, run.tag) == (JobStatus.DONE, "upload", "dataset")
    [produced] = await runs.run_artifacts(ctx, run_name=run.name)
    assert produced.manifests == request.manifests
    [tag] = await tags.list_tags(ctx)
    assert (tag.name, tag.run_name, tag.size) == ("dataset", run.name, len(b"rows"))
    runner = await register(ctx)
    ref = DepRef(kind=DepKind.TAG, tag="dataset")
    await runs.submit_run(ctx, request=submission(art_job("train", external=[ref])))
    assignment = await claims.try_claim(ctx, runner_id=runner)
    assert assignment is not None
    assert assignment.deps[0].manifests == request.manifests


async def test_upload_refuses_missing_blobs_and_taken_tags(ctx: ServerContext) -> None:
    absent = digest_bytes(b"absent")
    entry = FileEntry(path="a", size=1, mode=0o644, digest=absent)
    missing = upload(ctx).model_copy(update={"manifests": [Manifest(path="d", files=[entry])]})
    await uploads.upload_run(ctx, request=upload(ctx))

    with pytest.raises(StorageError, match=absent):
        await uploads.upload_run(ctx, request=missing)
    with pytest.raises(ConflictError, match="tag 'dataset' already exists"):
        await uploads.upload_run(ctx, request=upload(ctx))
    assert len(await runs.list_runs(ctx, all=True)) == 1


async def test_caches_are_saved_per_workflow_replaced_and_pruned(ctx: ServerContext) -> None:
    runner, job_id = await claimed(ctx)
    old = stored_manifest(ctx.blobs, "~/.cache/pip", b"old")
    new = stored_manifest(ctx.blobs, "~/.cache/pip", b"new")
    data = stored_manifest(ctx.blobs, "./data", b"data")
    for manifest in (old, data, new):
        await workflow_caches.save_cache(ctx, job_id=job_id, manifest=manifest, runner_id=runner)

    # The next job of the workflow gets the saved caches of the paths it declares, by path.
    assert await cache_claim(ctx, "~/.cache/pip", "./data") == [data, new]
    assert await cache_claim(ctx, "~/.cache/pip") == [new]
    assert await cache_claim(ctx) == []
    assert (
        await workflow_caches.prune_caches(ctx, repo_id="github.com/acme/models", workflow="train")
        == 2
    )
    assert await cache_claim(ctx, "~/.cache/pip", "./data") == []


async def cache_claim(ctx: ServerContext, *paths: str) -> list[Manifest]:
    """The caches a new job of workflow `train` declaring cache `paths` is handed (on a
    runner of its own, so that it is claimed whatever else runs)."""
    submitted = art_job(commands=[f"python train.py --paths {len(paths)}"], cache=list(paths))
    await runs.submit_run(ctx, request=submission(submitted))
    runner = await register(ctx, f"cache-{uuid.uuid4().hex[:8]}")
    assignment = await claims.try_claim(ctx, runner_id=runner)
    assert assignment is not None
    return assignment.caches
