"""Shared helpers of the runner tests: an in-memory server twin and job fixtures."""

from __future__ import annotations

import hashlib
import queue
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest

from dstack.errors import ServerError
from dstack.models.artifacts import Manifest
from dstack.models.job import JobSpec, JobStatus
from dstack.models.logs import LogStream
from dstack.models.protocol import (
    HeartbeatRequest,
    HeartbeatResponse,
    JobAssignment,
    JobStatusUpdate,
    LogBatch,
    LogLine,
    RegisterRunnerRequest,
    RegisterRunnerResponse,
)
from dstack.models.repo import RepoRef
from dstack.repo import create_bundle
from dstack.runner.executors.base import JobContext


class FakeRunnerApi:
    """`RunnerApi` in memory: jobs to hand out, statuses and logs received, blobs to serve."""

    def __init__(self) -> None:
        self.registrations: list[RegisterRunnerRequest] = []
        self.heartbeats: list[HeartbeatRequest] = []
        self.assignments: queue.Queue[JobAssignment] = queue.Queue()
        self.answers: queue.Queue[HeartbeatResponse] = queue.Queue()
        self.statuses: dict[str, list[JobStatusUpdate]] = defaultdict(list)
        self.lines: dict[str, dict[int, LogLine]] = defaultdict(dict)
        self.blobs: dict[str, bytes] = {}
        self.artifacts: dict[str, list[Manifest]] = defaultdict(list)
        self.caches: dict[str, list[Manifest]] = defaultdict(list)
        self.events: dict[str, list[str]] = defaultdict(list)
        """Per job, in order: `status:<status>`, `artifacts:<path>`, `cache:<path>`."""
        self.log_failures = 0
        self.batches = 0
        self._cond = threading.Condition()

    def register(self, request: RegisterRunnerRequest) -> RegisterRunnerResponse:
        self.registrations.append(request)
        return RegisterRunnerResponse(runner_id="runner-1")

    def heartbeat(self, runner_id: str, request: HeartbeatRequest) -> HeartbeatResponse:
        self.heartbeats.append(request)
        try:
            return self.answers.get_nowait()
        except queue.Empty:
            return HeartbeatResponse()

    def claim(self, runner_id: str, wait_seconds: float) -> JobAssignment | None:
        try:
            return self.assignments.get(timeout=min(wait_seconds, 0.05))
        except queue.Empty:
            return None

    def post_status(self, job_id: str, update: JobStatusUpdate) -> None:
        with self._cond:
            self.statuses[job_id].append(update)
            self.events[job_id].append(f"status:{update.status}")
            self._cond.notify_all()

    def post_artifacts(self, job_id: str, manifest: Manifest) -> None:
        with self._cond:
            self.artifacts[job_id].append(manifest)
            self.events[job_id].append(f"artifacts:{manifest.path}")
            self._cond.notify_all()

    def post_cache(self, job_id: str, manifest: Manifest) -> None:
        with self._cond:
            self.caches[job_id].append(manifest)
            self.events[job_id].append(f"cache:{manifest.path}")
            self._cond.notify_all()

    def wait_manifest(
        self, job_id: str, accept: Callable[[Manifest], bool], timeout: float = 20
    ) -> Manifest:
        """The first artifact manifest posted for the job that `accept`s."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for manifest in self.artifacts[job_id]:
                    if accept(manifest):
                        return manifest
                left = deadline - time.monotonic()
                assert left > 0, f"no such manifest of {job_id}: {self.artifacts[job_id]}"
                self._cond.wait(left)

    def latest(self, job_id: str, path: str) -> Manifest:
        """The last manifest the job posted for an artifact path (what the server keeps)."""
        return [m for m in self.artifacts[job_id] if m.path == path][-1]

    def post_logs(self, job_id: str, batch: LogBatch) -> None:
        with self._cond:
            if self.log_failures > 0:
                self.log_failures -= 1
                raise ServerError("POST /api/jobs/x/logs failed (503): restarting")
            self.batches += 1
            for line in batch.lines:
                self.lines[job_id].setdefault(line.seq, line)

    def get_blob(self, digest: str, target: Path) -> None:
        target.write_bytes(self.blobs[digest])

    def add_blob(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        self.blobs[digest] = data
        return digest

    def wait_final(self, job_id: str, timeout: float = 20) -> JobStatusUpdate:
        return self.wait_status(job_id, lambda s: s.is_finished(), timeout)

    def wait_status(
        self, job_id: str, accept: Callable[[JobStatus], bool], timeout: float = 20
    ) -> JobStatusUpdate:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for update in self.statuses[job_id]:
                    if accept(update.status):
                        return update
                left = deadline - time.monotonic()
                assert left > 0, f"no such status of {job_id}: {self.statuses[job_id]}"
                self._cond.wait(left)

    def text(self, job_id: str, stream: LogStream | None = None) -> str:
        lines = [self.lines[job_id][seq] for seq in sorted(self.lines[job_id])]
        return "".join(line.data for line in lines if stream is None or line.stream == stream)


class Output:
    """Collects what an executor delivers, per stream."""

    def __init__(self) -> None:
        self.chunks: list[tuple[LogStream, bytes]] = []
        self.notices: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, stream: LogStream, data: bytes) -> None:
        with self._lock:
            self.chunks.append((stream, data))

    def notice(self, text: str) -> None:
        self.notices.append(text)

    def text(self, stream: LogStream) -> str:
        return b"".join(d for s, d in self.chunks if s == stream).decode()


def make_context(
    tmp_path: Path, spec: JobSpec, output: Output, *, env: dict[str, str] | None = None
) -> JobContext:
    job_dir = tmp_path / "job"
    code_dir = job_dir / "code"
    code_dir.mkdir(parents=True, exist_ok=True)
    return JobContext(
        job_id="job-1",
        run_name="wise-cat-1",
        spec=spec,
        job_dir=job_dir,
        code_dir=code_dir,
        env=env or {},
        output=output,
        notice=output.notice,
    )


def git(cwd: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return result.stdout.strip()


@pytest.fixture
def repo_ref(tmp_path: Path, fake_api: FakeRunnerApi) -> RepoRef:
    """A committed repo holding `train.sh` and `data/in.txt`, served as a bundle blob."""
    root = tmp_path / "user-repo"
    (root / "data").mkdir(parents=True)
    git(root, "init", "-q")
    (root / "train.sh").write_text("echo training on $(cat data/in.txt)\n")
    (root / "data" / "in.txt").write_text("cats\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "first")
    commit = git(root, "rev-parse", "HEAD")
    bundle = tmp_path / "code.bundle"
    create_bundle(root, commit, bundle)
    return RepoRef(
        repo_id="local/user-repo",
        commit=commit,
        tree=git(root, "rev-parse", "HEAD^{tree}"),
        bundle_digest=fake_api.add_blob(bundle.read_bytes()),
    )


@pytest.fixture
def fake_api() -> FakeRunnerApi:
    return FakeRunnerApi()
