"""Helpers of the artifact tests: a runner with an injected blob store, stores that count."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.runner.conftest import FakeRunnerApi

from dstack.errors import StorageError
from dstack.models.artifacts import DepArtifacts, FileEntry, Manifest
from dstack.models.digests import digest_bytes
from dstack.models.job import JobSpec
from dstack.models.protocol import JobAssignment
from dstack.models.repo import RepoRef
from dstack.models.resources import HostResources
from dstack.models.workflow import ArtifactSpec
from dstack.runner.daemon import Runner
from dstack.runner.executors.base import Executor
from dstack.runner.executors.process import ProcessExecutor
from dstack.runner.settings import RunnerSettings
from dstack.storage.base import BlobStore
from dstack.storage.memory import MemoryBlobStore


class CountingStore(MemoryBlobStore):
    """A memory store that counts the uploads of each digest (to see dedup at work)."""

    def __init__(self) -> None:
        super().__init__()
        self.puts: Counter[str] = Counter()
        self.fail_puts = False

    def put_file(self, path: Path, digest: str) -> None:
        self._count(digest)
        MemoryBlobStore.put_bytes(self, path.read_bytes(), digest)  # not counted twice

    def put_bytes(self, data: bytes, digest: str) -> None:
        self._count(digest)
        super().put_bytes(data, digest)

    def content(self, digest: str) -> bytes:
        return b"".join(self.open(digest))

    def _count(self, digest: str) -> None:
        if self.fail_puts:
            raise StorageError(f"cannot store blob {digest}: disk full")
        self.puts[digest] += 1


@contextmanager
def running(
    tmp_path: Path,
    api: FakeRunnerApi,
    store: BlobStore,
    *,
    executor: Callable[[RunnerSettings], Executor] = lambda _: ProcessExecutor(),
    **settings: Any,
) -> Iterator[Runner]:
    """A runner serving `api`, storing artifacts in `store`, until the block ends."""
    options: dict[str, Any] = {
        "heartbeat_interval": 0.05,
        "claim_wait": 0.05,
        "stop_grace": 5,
        "artifact_sync_interval": 3600,
        **settings,
    }
    config = RunnerSettings(
        server_url="http://server", token="t", name="box", work_dir=tmp_path / "runner", **options
    )
    runner = Runner(
        config,
        api,
        executor,
        resources=lambda: HostResources(cpus=2, memory_mib=4096, disk_mib=1000),
        blob_store=lambda access: store,
    )
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        yield runner
    finally:
        runner.shutdown()
        thread.join(30)
        assert not thread.is_alive()


def assign(
    repo: RepoRef,
    *commands: str,
    artifacts: list[str] | None = None,
    mounts: list[str] | None = None,
    job_id: str = "job-1",
    **kwargs: Any,
) -> JobAssignment:
    specs = [ArtifactSpec(path=p) for p in artifacts or []]
    specs += [ArtifactSpec(path=p, mount=True) for p in mounts or []]
    spec = JobSpec(
        provider="bash", workflow_name="train", commands=list(commands), artifacts=specs, **kwargs
    )
    return JobAssignment(job_id=job_id, run_name="wise-cat-1", job_index=0, spec=spec, repo=repo)


def stored_manifest(store: BlobStore, path: str, files: dict[str, bytes]) -> Manifest:
    """Store `files` (relative path → content) as blobs; their manifest under `path`."""
    entries = []
    for name, data in sorted(files.items()):
        digest = digest_bytes(data)
        store.put_bytes(data, digest)
        entries.append(FileEntry(path=name, size=len(data), mode=0o644, digest=digest))
    return Manifest(path=path, files=entries)


def dependency(*manifests: Manifest, workflow: str = "prepare") -> DepArtifacts:
    return DepArtifacts(
        job_id="dep-job", run_name="old-dog-1", workflow_name=workflow, manifests=list(manifests)
    )


def digest_of(data: bytes) -> str:
    return digest_bytes(data)


def files_of(manifest: Manifest) -> dict[str, str]:
    return {f.path: f.digest for f in manifest.files}
