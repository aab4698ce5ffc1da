"""How a runner is configured. Built by the CLI (or a test) and passed in; never read globally."""

from __future__ import annotations

import hashlib
import os
import socket
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dstack.errors import ConfigError
from dstack.providers.images import ImageSettings
from dstack.runner.clone import GitTimeouts
from dstack.runner.credential import CREDENTIAL_FILE
from dstack.settings import EnvSettings

JOB_USER_DIR = Path("/var/lib/dstack-runner")
"""Where the folders of jobs that run as a user of their own live (see `jobs_dir`)."""


def _default_name() -> str:
    return socket.gethostname()


def _default_work_dir() -> Path:
    """`<home>/runner` of the dstack home `DSTACK_HOME` names: the local server's runner's."""
    return EnvSettings.read(os.environ).layout.runner_dir


@dataclass(frozen=True)
class RunnerSettings:
    """Everything `Runner` needs to know about where it runs and whom it serves."""

    server_url: str
    token: str
    """The registration token: it only registers; the runner's own credential (stored at
    `credential_path`) carries every later request."""
    name: str = field(default_factory=_default_name)
    work_dir: Path = field(default_factory=_default_work_dir)
    executor: str | None = None
    """`docker`, `process`, or None: docker when an engine answers, else process."""
    labels: dict[str, str] = field(default_factory=dict)
    heartbeat_interval: float = 1.0
    """Seconds between two heartbeats (`--heartbeat-interval`); the server's
    `--runner-timeout` must be several times longer."""
    claim_wait: float = 10.0
    """Seconds one `/claim` long-poll may wait for a job (`--claim-wait`)."""
    stop_grace: float = 10.0
    """Seconds between SIGTERM and SIGKILL when a job is stopped."""
    retry_backoff: float = 1.0
    """First pause after a failed call to the server; doubles up to `retry_backoff_max`."""
    retry_backoff_max: float = 10.0
    git_timeouts: GitTimeouts = field(default_factory=GitTimeouts)
    """How long a `git fetch` of a cloned repository, and the wait for its mirror, may take."""
    images: ImageSettings = field(default_factory=ImageSettings)
    """Default images of jobs that name none (`DSTACK_DEFAULT_IMAGE`, see `dstack.settings`)."""
    checkouts_kept: int = 8
    """Checked-out trees kept for the next jobs of the same code (0: check out every job)."""
    keep_job_dirs: bool = False
    """Keep each job's code and log spool after its final status was accepted."""
    artifact_sync_interval: float = 15.0
    """Seconds between two syncs of a running job's artifacts (changed files only)."""
    mount_sync_interval: float = 2.0
    """The same for `mount: true` artifacts, which users watch while the job runs."""
    job_user: str | None = None
    """The user process jobs run as (`--job-user`); None: the runner's own user."""
    job_user_dir: Path = JOB_USER_DIR
    min_free_disk_mib: int = 1024
    """The runner takes no job while the folder of its jobs has less free disk (MiB): a job
    that filled it would fail `disk_full` (`--min-free-disk`)."""
    server_file: Path | None = None
    """The local server's `server.json` (`--server-file`): a local runner outlives its server
    (a crash, a restart on a new port) and follows the URL this file names."""
    orphan_exit_after: float = 600.0
    """With `server_file`: seconds the server may stay unreachable before an idle runner
    exits (`--orphan-timeout`); a runner with jobs keeps them running meanwhile."""
    metadata_url: str | None = None
    """Base URL of the instance metadata service to watch for spot interruption notices
    (`--metadata-url`, `http://169.254.169.254` on EC2); None: not watched (self-hosted)."""
    metadata_interval: float = 5.0
    """Seconds between two looks for a notice (`--metadata-interval`)."""
    address: str | None = None
    """Where other runners reach this one (`--address`): the primary node's runner address
    is the other nodes' `MASTER_ADDR`. None: the source address of the route to the server."""
    crash_point: Callable[[str], None] | None = field(default=None, compare=False)
    """Called at named points of a job's life (`artifacts-stored`: a final sync stored its
    blobs, its manifest is not posted yet); tests kill the runner there. None: nothing."""

    @property
    def jobs_dir(self) -> Path:
        """The jobs' folders: in the work dir, or, when jobs run as a user of their own
        (who must not enter the work dir, nor may reach it: it is often under root's home),
        in `job_user_dir/jobs/<hash of the work dir>`."""
        if self.job_user is None:
            return self.work_dir / "jobs"
        key = hashlib.sha256(str(self.work_dir).encode()).hexdigest()[:16]
        return self.job_user_dir / "jobs" / key

    @property
    def mirrors_dir(self) -> Path:
        return self.work_dir / "mirrors"

    def create_dirs(self) -> None:
        """Create the work dir, 0700: the runner's alone (its credential, checkouts and
        mirrors of every repository it served). With a job user, also the folders on the
        way to `jobs_dir`, which that user must enter but not list (0711, owned by this
        process's user: a folder someone else owns is refused with `ConfigError`)."""
        self.work_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.work_dir, 0o700)
        if self.job_user is None:
            self.jobs_dir.mkdir(parents=True, exist_ok=True)
            return
        for folder in (self.job_user_dir, self.job_user_dir / "jobs", self.jobs_dir):
            folder.mkdir(mode=0o711, parents=True, exist_ok=True)
            st = os.lstat(folder)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
                raise ConfigError(
                    f"{folder} is not a folder of this runner's user",
                    hint="remove it; the runner creates it, owned by root",
                )
            os.chmod(folder, 0o711)

    @property
    def checkouts_dir(self) -> Path:
        return self.work_dir / "checkouts"

    @property
    def spares_dir(self) -> Path:
        """Copies of kept checkouts made ahead for the next jobs (`CheckoutCache`): in
        `jobs_dir` (as its `.trash` is), so that a job takes one with a rename."""
        return self.jobs_dir / ".spares"

    @property
    def held_dir(self) -> Path:
        """What the runner keeps about the jobs it holds (`dstack.runner.held`)."""
        return self.work_dir / "held"

    @property
    def lock_path(self) -> Path:
        """Held (`flock`) by the runner using this work dir; see `dstack.runner.lock`."""
        return self.work_dir / "runner.lock"

    @property
    def credential_path(self) -> Path:
        """The runner's own credential for `server_url` (`dstack.runner.credential`)."""
        return self.work_dir / CREDENTIAL_FILE
