"""Shared helpers of the runner tests: the in-memory server twin (`FakeRunnerApi`, from the
package) and job fixtures."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest

from dstack.api.runner_fake import FakeRunnerApi
from dstack.models.job import JobSpec
from dstack.models.logs import LogStream
from dstack.models.repo import RepoRef
from dstack.repo import create_bundle
from dstack.runner.executors.base import JobLaunch

__all__ = ["FakeRunnerApi", "Output", "git", "make_context"]


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
) -> JobLaunch:
    job_dir = tmp_path / "job"
    code_dir = job_dir / "code"
    code_dir.mkdir(parents=True, exist_ok=True)
    return JobLaunch(
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
