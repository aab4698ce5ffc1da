"""Artifacts, caching, tags, uploads and caches through the typed clients and a real server."""

from __future__ import annotations

from pathlib import Path

import pytest

from dstack.api import Client, RunnerClient
from dstack.api.blobs import HttpBlobStore
from dstack.errors import ConflictError, NotFoundError, StorageError
from dstack.models.artifacts import FileEntry, Manifest
from dstack.models.digests import digest_bytes
from dstack.models.job import JobSpec, JobStatus, TerminationReason
from dstack.models.protocol import (
    JobStatusUpdate,
    JobSubmission,
    SubmitRunRequest,
    UploadRunRequest,
)
from dstack.models.repo import RepoRef
from dstack.models.workflow import ArtifactSpec, DepKind, DepRef

from .conftest import LiveServer, registered_runner

REPO = RepoRef(repo_id="acme/models", tree="t" * 40)


def _request(tag: str | None = None, external: list[DepRef] | None = None) -> SubmitRunRequest:
    spec = JobSpec(
        provider="bash", commands=["python train.py"], artifacts=[ArtifactSpec(path="out")]
    )
    job = JobSubmission(
        workflow_name="train", spec=spec, code_key="tree-1", external_deps=external or []
    )
    return SubmitRunRequest(repo=REPO, workflow_name="train", tag=tag, jobs=[job])


def _runner(server: LiveServer) -> RunnerClient:
    return registered_runner(server)


def _upload(store: HttpBlobStore, tmp_path: Path, path: str, content: bytes) -> Manifest:
    digest = digest_bytes(content)
    if store.missing([digest]):
        file = tmp_path / digest
        file.write_bytes(content)
        store.put_file(file, digest)
    entry = FileEntry(path="file.bin", size=len(content), mode=0o644, digest=digest)
    return Manifest(path=path, files=[entry])


def test_artifacts_cache_and_tags_end_to_end(live_server: LiveServer, tmp_path: Path) -> None:
    live_server.settings.gc_grace_seconds = 0
    with Client(live_server.url, live_server.token) as user, _runner(live_server) as runner:
        assert [j.reason for j in user.plan_run(_request()).jobs] == ["no earlier run"]
        run = user.submit_run(_request(tag="best"))
        assignment = runner.claim(10)
        assert assignment is not None
        assert assignment.storage.kind == "local"
        store = runner.blob_store(assignment.storage)
        assert isinstance(store, HttpBlobStore)
        out = _upload(store, tmp_path, "out", b"model")
        pip = _upload(store, tmp_path, "~/.cache/pip", b"wheel")
        runner.post_artifacts(assignment.job_id, out)
        runner.post_cache(assignment.job_id, pip)
        for status in (JobStatus.RUNNING, JobStatus.UPLOADING, JobStatus.DONE):
            runner.post_status(assignment.job_id, JobStatusUpdate(status=status))

        [produced] = user.get_artifacts(run.name)
        assert produced.manifests == [out]
        assert [(t.name, t.run_name) for t in user.list_tags(repo_id="acme/models")] == [
            ("best", run.name)
        ]
        plan = user.plan_run(_request())
        assert [(j.cached_from, j.reason) for j in plan.jobs] == [(run.name, "cached")]

        cached = user.submit_run(_request())
        assert cached.status is JobStatus.DONE
        assert cached.jobs[0].reason is TerminationReason.CACHED
        assert cached.jobs[0].reused_from == run.name
        assert user.get_artifacts(cached.name)[0].run_name == run.name

        with pytest.raises(ConflictError, match="tagged 'best'"):
            user.delete_run(run.name)
        user.delete_tag("best", REPO.repo_id)
        user.delete_run(run.name)
        assert user.get_artifacts(cached.name)[0].manifests == [out]
        assert user.missing_blobs([out.files[0].digest]) == []

        assert user.prune_cache("acme/models", "train") == 1
        assert user.missing_blobs([pip.files[0].digest]) == [pip.files[0].digest]


def test_tags_uploads_and_external_deps(live_server: LiveServer, tmp_path: Path) -> None:
    with Client(live_server.url, live_server.token) as user, _runner(live_server) as runner:
        with pytest.raises(NotFoundError, match="tag 'data' does not exist"):
            user.submit_run(_request(external=[DepRef(kind=DepKind.TAG, tag="data")]))
        assert user.list_runs(all=True) == []

        data = _upload(HttpBlobStore.sharing(user.transport), tmp_path, "data", b"rows")
        uploaded = user.upload_run(UploadRunRequest(tag="data", repo=REPO, manifests=[data]))
        assert (uploaded.status, uploaded.tag) == (JobStatus.DONE, "data")
        [tag] = user.list_tags()
        assert (tag.name, tag.run_name, tag.size) == ("data", uploaded.name, 4)

        user.submit_run(_request(external=[DepRef(kind=DepKind.TAG, tag="data")]))
        assignment = runner.claim(10)
        assert assignment is not None
        assert [(d.run_name, d.manifests) for d in assignment.deps] == [(uploaded.name, [data])]

        with pytest.raises(ConflictError, match="already exists"):
            user.add_tag("data", uploaded.name)
        with pytest.raises(ConflictError, match="did not succeed"):
            user.add_tag("wip", assignment.run_name)
        assert user.add_tag("v1", uploaded.name).run_name == uploaded.name
        absent = digest_bytes(b"absent")
        bad = Manifest(path="x", files=[FileEntry(path="a", size=1, mode=0o644, digest=absent)])
        with pytest.raises(StorageError, match=absent):
            user.upload_run(UploadRunRequest(tag="v2", repo=REPO, manifests=[bad]))
        with pytest.raises(StorageError, match=absent):
            runner.post_artifacts(assignment.job_id, bad)
        with pytest.raises(NotFoundError):
            user.delete_tag("v2", REPO.repo_id)


def test_artifacts_stored_with_sha256_digests_keep_working(
    live_server: LiveServer, tmp_path: Path
) -> None:
    """What a server stored before BLAKE3: blobs named by their sha256, manifests (database
    rows) listing those names. They are accepted, listed and downloaded verified; a blob
    whose bytes match neither digest is still refused."""
    content = b"weights from before the upgrade" * 100_000
    old = digest_bytes(content, "sha256")
    with Client(live_server.url, live_server.token) as user, _runner(live_server) as runner:
        run = user.submit_run(_request())
        assignment = runner.claim(10)
        assert assignment is not None
        store = runner.blob_store(assignment.storage)
        (tmp_path / "old.bin").write_bytes(content)
        store.put_file(tmp_path / "old.bin", old)
        entry = FileEntry(path="file.bin", size=len(content), mode=0o644, digest=old)
        runner.post_artifacts(assignment.job_id, Manifest(path="out", files=[entry]))
        with pytest.raises(StorageError, match="does not match"):
            store.put_bytes(b"other bytes", digest_bytes(b"x", "sha256"))

        [produced] = user.get_artifacts(run.name)
        assert produced.manifests[0].files[0].digest == old
        assert store.exists(old)
        user.get_blob(old, tmp_path / "back.bin")
        store.get_file(old, tmp_path / "placed.bin")

    assert (tmp_path / "back.bin").read_bytes() == content
    assert (tmp_path / "placed.bin").read_bytes() == content
