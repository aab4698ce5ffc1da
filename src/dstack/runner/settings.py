"""How a runner is configured. Built by the CLI (or a test) and passed in; never read globally."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

from dstack.providers.images import ImageSettings
from dstack.runner.credential import CREDENTIAL_FILE


def _default_name() -> str:
    return socket.gethostname()


@dataclass(frozen=True)
class RunnerSettings:
    """Everything `Runner` needs to know about where it runs and whom it serves."""

    server_url: str
    token: str
    """The registration token: it only registers; the runner's own credential (stored at
    `credential_path`) carries every later request."""
    name: str = field(default_factory=_default_name)
    work_dir: Path = field(default_factory=lambda: Path.home() / ".dstack" / "runner")
    executor: str | None = None
    """`docker`, `process`, or None: docker when an engine answers, else process."""
    labels: dict[str, str] = field(default_factory=dict)
    heartbeat_interval: float = 1.0
    claim_wait: float = 10.0
    """Seconds one `/claim` long-poll may wait for a job."""
    stop_grace: float = 10.0
    """Seconds between SIGTERM and SIGKILL when a job is stopped."""
    retry_backoff: float = 1.0
    """First pause after a failed call to the server; doubles up to `retry_backoff_max`."""
    retry_backoff_max: float = 10.0
    images: ImageSettings = field(default_factory=ImageSettings)
    """Default images of jobs that name none (`DSTACK_DEFAULT_IMAGE`)."""
    checkouts_kept: int = 8
    """Checked-out trees kept for the next jobs of the same code (0: check out every job)."""
    keep_job_dirs: bool = False
    """Keep each job's code and log spool after its final status was accepted."""
    artifact_sync_interval: float = 15.0
    """Seconds between two syncs of a running job's artifacts (changed files only)."""
    mount_sync_interval: float = 2.0
    """The same for `mount: true` artifacts, which users watch while the job runs."""

    @property
    def jobs_dir(self) -> Path:
        return self.work_dir / "jobs"

    @property
    def checkouts_dir(self) -> Path:
        return self.work_dir / "checkouts"

    @property
    def credential_path(self) -> Path:
        """The runner's own credential for `server_url` (`dstack.runner.credential`)."""
        return self.work_dir / CREDENTIAL_FILE
