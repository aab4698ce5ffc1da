"""`ServerSettings`: everything a server needs to know, passed in by whoever starts it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from dstack.errors import ConfigError
from dstack.paths import HomeLayout, ServerFiles

PRIVATE_DIR_MODE = 0o700
"""The server's folder (database, blobs, tokens, log) is its user's alone."""


def make_private_dir(path: Path) -> Path:
    """Create `path` (with its parents) and make it 0700, also when it existed with a wider
    mode (written by an older version); returns `path`."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        os.chmod(path, PRIVATE_DIR_MODE)
    return path


PUBLIC_URL_MAX = 500


def check_public_url(url: str) -> str:
    """`url` without a trailing `/` if it is an http(s) URL of a host, with no user,
    password, query or fragment (it is written into every instance's user data);
    `ConfigError` else."""
    from dstack.models.backends_api import url_problem  # pydantic: only when one is given

    problem = url_problem(url)
    if problem is None and (len(url) > PUBLIC_URL_MAX or not url.isprintable() or " " in url):
        problem = f"'{url[:80]}' has blanks or is longer than {PUBLIC_URL_MAX} characters"
    if problem is not None:
        raise ConfigError(
            f"invalid public URL: {problem}",
            hint="give the URL instances reach this server at, e.g. https://dstack.example.com",
        )
    return url.rstrip("/")


@dataclass
class ServerSettings:
    """Configuration of one server. Nothing here is read from the environment.

    `home` is the dstack home (`~/.dstack`); the server keeps its files in `home/server/`
    (0700; `make_private_dir`; `files` names them), the SQLite database there 0600.
    The grace periods and timeouts are settable by `DSTACK_SERVER_*` variables
    (`dstack.settings.SERVER_DURATIONS`; README.md, "Settings").
    """

    home: Path
    # The admin token (`DSTACK_SERVER_ADMIN_TOKEN`). None: one is generated on the first
    # start, printed once and kept in `home/server/admin_token` (mode 0600).
    token: str | None = None
    host: str = "127.0.0.1"
    port: int = 3000
    database_url: str | None = None
    blob_dir: Path | None = None
    # Where blobs live: None for the folder `blob_dir`, or `s3://bucket/prefix`.
    storage: str | None = None
    # An S3-compatible endpoint (MinIO, moto); None: AWS's own for the bucket.
    s3_endpoint_url: str | None = None
    # The admin's user name, recorded on the runs the admin token submits.
    user: str = "admin"
    # A runner registration token accepted besides those admins create (fixed deployments).
    runner_token: str | None = None
    # Encrypts secrets at rest (`DSTACK_SERVER_SECRET_KEY`; any string). None: generated once
    # in `home/server/secret_key` (mode 0600). Servers sharing a database must share it.
    secret_key: str | None = None
    # A runner silent this long (no heartbeat, no claim) is offline and its jobs are lost,
    # counted only over time this server was listening (not while it was down or stalled).
    runner_heartbeat_timeout: float = 15.0
    # Deadlines of the states a live runner could leave a job in forever (docs: "Deadlines"
    # in README.md). Past them the job is final with `deadline_exceeded`, except
    # `provisioning`: a claim its runner never confirmed (the answer was lost) goes back to
    # the queue once, and fails with `runner_lost` the second time. Counted from when the
    # job entered the state, over time this server was listening. `running` has none.
    provisioning_timeout: float = 300.0
    downloading_timeout: float = 3600.0
    uploading_timeout: float = 3600.0
    # Unreferenced blobs younger than this survive garbage collection: an upload whose
    # manifest has not arrived yet must never be deleted.
    gc_grace_seconds: float = 3600.0
    # A server just started gives its runners this long to register before jobs that no
    # runner can take fail with `no_capacity`.
    no_runner_grace_seconds: float = 30.0
    scheduler_interval: float = 1.0
    # Cloud runners ("Cloud runners: how provisioning works" in README.md).
    # An instance whose runner has not registered this long after it was asked for is
    # terminated, and its job tries the next offer.
    instance_registration_timeout: float = 600.0
    # When no offer has capacity, a job waits this long before a new round of offers (then
    # twice as long, up to 8 times), and fails `no_capacity` once it waited
    # `no_capacity_timeout` in all.
    no_capacity_backoff: float = 30.0
    no_capacity_timeout: float = 1800.0
    # How often each live instance is described to its cloud (terminated, interrupted).
    instance_poll_interval: float = 10.0
    # How long a token, once checked, is trusted without the database. Revocations in this
    # process take effect at once; those of another server sharing the database within it.
    auth_cache_seconds: float = 2.0
    # How long a presigned blob URL (S3 storage) stays valid: long enough for a
    # multi-gigabyte artifact on a slow link, short enough to be worthless soon after it leaked.
    presign_url_seconds: float = 3600.0
    # How long an idle HTTP connection (a CLI's, a runner's) is kept open for its next
    # request (whole seconds). Longer than clients keep an idle connection (httpx: 5 s): with
    # equal times, a client may send a request on a connection in the very moment the server
    # closes it, the request fails with a read error, and a POST (a claim) is not retried.
    keep_alive_seconds: float = 30.0
    # The local runner, restarted after it exits, waits twice as long each time up to this
    # (back to 1 s once a runner lived a minute).
    runner_restart_max_seconds: float = 30.0
    finished_runs_listed: int = 10
    # Request body limits in bytes (413 past them; docs/api.md, "Limits"). Every body but a
    # blob's is parsed in memory, so each endpoint gets the least its callers need.
    max_body_bytes: int = 1 << 20
    max_log_batch_bytes: int = 4 << 20
    max_run_bytes: int = 4 << 20  # submit and plan: every job's spec
    max_manifest_bytes: int = 64 << 20  # a manifest lists every file of an artifact
    # Blob uploads stream to the store (never held in memory): None leaves them unbounded.
    max_blob_bytes: int | None = None
    # Once started, move everything alive (modules, schemas, routes) out of the garbage
    # collector's sight: its full collections then walk only what requests made since,
    # instead of pausing every request in flight for tens of milliseconds. For `dstack
    # server`, not for tests that share a process. (The local server starts with the
    # collector paused and freezes once it listens: `local_main`.)
    freeze_heap_at_start: bool = False
    local_runner: bool = False
    local_runner_executor: str | None = None
    local_runner_work_dir: Path | None = None
    # Replaces the runner's command line (the URL and token are still appended); for tests.
    local_runner_command: list[str] | None = None
    # The URL cloud instances dial to reach this server (`dstack server --public-url`): it
    # goes into their user data. None: `url` (right only for instances that reach it so).
    public_url: str | None = None

    def __post_init__(self) -> None:
        if self.public_url is not None:
            self.public_url = check_public_url(self.public_url)

    def with_durations(self, durations: Mapping[str, float]) -> ServerSettings:
        """A copy with these grace periods and timeouts (field → seconds), as
        `dstack.settings.EnvSettings.server_durations` gives them; a name that is not a
        field in seconds raises `ValueError`."""
        copy = replace(self)
        for name, seconds in durations.items():
            if not isinstance(getattr(self, name, None), float):
                raise ValueError(f"{name} is not a ServerSettings duration")
            setattr(copy, name, seconds)
        return copy

    @property
    def files(self) -> ServerFiles:
        return HomeLayout(self.home).server

    @property
    def server_dir(self) -> Path:
        return self.files.dir

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    def resolved_public_url(self) -> str:
        """The URL cloud instances' runners start with (`--server`)."""
        return self.public_url or self.url

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.files.database}"

    def resolved_blob_dir(self) -> Path:
        return self.blob_dir or self.files.blobs

    def resolved_runner_work_dir(self) -> Path:
        return self.local_runner_work_dir or HomeLayout(self.home).runner_dir
