"""The `DSTACK_*` environment variables, read here and nowhere else.

An entry point (the CLI, `dstack server`, the background local server) calls
`EnvSettings.read(os.environ)` once and passes what it needs on; nothing reads the
environment at import time. Variables bound to a command-line option (`DSTACK_RUNNER_TOKEN`,
`DSTACK_RUNNER_JOB_USER`, `DSTACK_RUNNER_MIN_FREE_DISK`, `DSTACK_RUNNER_METADATA_URL`,
`DSTACK_RECONNECT_TIMEOUT`) are read by that option, and a job's default images by
`ImageSettings.from_env`; README.md, "Settings", lists them all.

A plain module rather than `pydantic-settings`: every CLI command reads its home here, and
importing `pydantic-settings` costs 30 ms even after pydantic (120 ms without), more than a
warm `dstack --help` takes in all; named tuples rather than dataclasses for the same reason
(`dataclasses` costs 6 ms).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import NamedTuple

from dstack.errors import ConfigError
from dstack.paths import HomeLayout, resolve_home

HOME = "DSTACK_HOME"
EXECUTOR = "DSTACK_EXECUTOR"
SERVER_ADMIN_TOKEN = "DSTACK_SERVER_ADMIN_TOKEN"
SERVER_SECRET_KEY = "DSTACK_SERVER_SECRET_KEY"
EXECUTORS = ("docker", "process")


class Duration(NamedTuple):
    """A server's grace period or timeout settable by a variable: `field` of
    `ServerSettings`, in seconds, at least `minimum`."""

    env: str
    field: str
    minimum: float = 0.0


SERVER_DURATIONS = (
    Duration("DSTACK_SERVER_RUNNER_TIMEOUT", "runner_heartbeat_timeout", minimum=1.0),
    Duration("DSTACK_SERVER_PROVISIONING_TIMEOUT", "provisioning_timeout", minimum=1.0),
    Duration("DSTACK_SERVER_DOWNLOADING_TIMEOUT", "downloading_timeout", minimum=1.0),
    Duration("DSTACK_SERVER_UPLOADING_TIMEOUT", "uploading_timeout", minimum=1.0),
    Duration("DSTACK_SERVER_NO_RUNNER_GRACE", "no_runner_grace_seconds"),
    Duration("DSTACK_SERVER_GC_GRACE", "gc_grace_seconds"),
    Duration("DSTACK_SERVER_AUTH_CACHE", "auth_cache_seconds"),
    Duration("DSTACK_SERVER_PRESIGN_TTL", "presign_url_seconds", minimum=1.0),
    Duration("DSTACK_SERVER_INSTANCE_REGISTRATION_TIMEOUT", "instance_registration_timeout", 1.0),
    Duration("DSTACK_SERVER_NO_CAPACITY_BACKOFF", "no_capacity_backoff", minimum=1.0),
    Duration("DSTACK_SERVER_NO_CAPACITY_TIMEOUT", "no_capacity_timeout"),
    Duration("DSTACK_SERVER_INSTANCE_POLL_INTERVAL", "instance_poll_interval", minimum=0.1),
)
"""The server's durations settable by environment variable (`dstack server` and the local
server alike); `dstack server`'s options, where they exist, win over them."""


class EnvSettings(NamedTuple):
    """What the `DSTACK_*` variables say; None (or no entry) where a variable is unset or
    empty, so the code's defaults apply."""

    home: Path
    executor: str | None = None
    server_admin_token: str | None = None
    server_secret_key: str | None = None
    server_durations: Mapping[str, float] = MappingProxyType({})
    """`ServerSettings` field → seconds, for the `SERVER_DURATIONS` that are set."""

    @classmethod
    def read(cls, environ: Mapping[str, str]) -> EnvSettings:
        """Read `environ`; raises `ConfigError` naming the variable on a value that is not
        valid (an unknown executor, a duration that is not a number or below its minimum)."""
        return cls(
            home=resolve_home(environ.get(HOME)),
            executor=_executor(environ.get(EXECUTOR) or None),
            server_admin_token=environ.get(SERVER_ADMIN_TOKEN) or None,
            server_secret_key=environ.get(SERVER_SECRET_KEY) or None,
            server_durations={
                d.field: _seconds(d, environ[d.env]) for d in SERVER_DURATIONS if environ.get(d.env)
            },
        )

    @property
    def layout(self) -> HomeLayout:
        return HomeLayout(self.home)


def _executor(value: str | None) -> str | None:
    if value is not None and value not in EXECUTORS:
        raise ConfigError(
            f"invalid {EXECUTOR} '{value}'", hint=f"use one of: {', '.join(EXECUTORS)}"
        )
    return value


def _seconds(duration: Duration, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= duration.minimum or value == float("inf"):
        raise ConfigError(
            f"invalid {duration.env} '{text}'",
            hint=f"give a number of seconds, at least {duration.minimum:g}",
        )
    return value
