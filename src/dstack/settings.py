"""The `DSTACK_*` environment variables, named here and read here and nowhere else.

An entry point (the CLI, `dstack server`, the background local server, `dstack-runner
start`) calls `EnvSettings.read(os.environ)` once and passes what it needs on; nothing reads
the environment at import time. The rule, checked by `tests/test_settings.py`:

- every variable's name is a constant of this module; no other module spells `DSTACK_...` to
  read the environment (`os.environ`, `getenv`, click's `envvar=`);
- a variable that stands in for a command-line option (`OPTION_VARIABLES`) is read by that
  option, through click's `envvar=` with the constant from here, so that the option's type
  check, default and help apply to both and the option wins; none is read both ways;
- the fault-injection suite's hooks (`TEST_HOOKS`) are read here too, the pause points'
  folder at each pause point (`fault_hooks`; a test sets them for runner processes it starts).

README.md, "Settings", lists them all, with every grace period and timeout.

A plain module rather than `pydantic-settings`: every CLI command reads its home here, and
importing `pydantic-settings` costs 30 ms even after pydantic (120 ms without), more than a
warm `dstack --help` takes in all; named tuples rather than dataclasses for the same reason
(`dataclasses` costs 6 ms).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, NamedTuple

from dstack.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path

    from dstack.paths import HomeLayout

HOME = "DSTACK_HOME"
EXECUTOR = "DSTACK_EXECUTOR"
SERVER_ADMIN_TOKEN = "DSTACK_SERVER_ADMIN_TOKEN"
SERVER_SECRET_KEY = "DSTACK_SERVER_SECRET_KEY"
DEFAULT_IMAGE = "DSTACK_DEFAULT_IMAGE"
DEFAULT_GPU_IMAGE = "DSTACK_DEFAULT_GPU_IMAGE"
RECONNECT_TIMEOUT = "DSTACK_RECONNECT_TIMEOUT"
UPLOAD_CONFIRM_SIZE = "DSTACK_UPLOAD_CONFIRM_SIZE"
RUNNER_TOKEN = "DSTACK_RUNNER_TOKEN"
RUNNER_JOB_USER = "DSTACK_RUNNER_JOB_USER"
RUNNER_MIN_FREE_DISK = "DSTACK_RUNNER_MIN_FREE_DISK"
RUNNER_METADATA_URL = "DSTACK_RUNNER_METADATA_URL"
RUNNER_FAULT_HOOKS = "DSTACK_RUNNER_FAULT_HOOKS"
RUNNER_TEST_CRASH_AT = "DSTACK_RUNNER_TEST_CRASH_AT"
RUNNER_TEST_CRASH_COUNT = "DSTACK_RUNNER_TEST_CRASH_COUNT"

OPTION_VARIABLES = {
    RECONNECT_TIMEOUT: "--reconnect-timeout",
    RUNNER_TOKEN: "--token",
    RUNNER_JOB_USER: "--job-user",
    RUNNER_MIN_FREE_DISK: "--min-free-disk",
    RUNNER_METADATA_URL: "--metadata-url",
}
"""Variables read by the command-line option they stand in for (click's `envvar=`)."""

TEST_HOOKS = (RUNNER_FAULT_HOOKS, RUNNER_TEST_CRASH_AT, RUNNER_TEST_CRASH_COUNT)
"""Set only by the fault-injection suite (`tests/faults/`), for runner processes it starts."""
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
    Duration("DSTACK_SERVER_KEEP_ALIVE", "keep_alive_seconds", minimum=1.0),
    Duration("DSTACK_SERVER_RUNNER_RESTART_MAX", "runner_restart_max_seconds", minimum=1.0),
)
"""The server's durations settable by environment variable (`dstack server` and the local
server alike); `dstack server`'s options, where they exist, win over them."""

LOCAL_SERVER_START = Duration(
    "DSTACK_LOCAL_SERVER_START_TIMEOUT", "local_server_start_timeout", minimum=1.0
)
"""How long a command waits for the local server it started (or another command is
starting) to answer: `EnvSettings.local_server_start_timeout`."""

CLI_SERVER = "DSTACK_CLI_SERVER"
"""`0`: every command imports the CLI itself, and no command server is started."""

CLI_SERVER_IDLE = Duration("DSTACK_CLI_SERVER_IDLE_TIMEOUT", "cli_server_idle_timeout")
"""How long the CLI's command server waits for a command before it leaves; 0 keeps it."""


def cli_server(environ: Mapping[str, str]) -> float | None:
    """The command server's idle timeout in seconds (0: none), or None when it is off
    (`dstack.cli.warm`: read before every command, so it imports nothing)."""
    if environ.get(CLI_SERVER, "").strip() == "0":
        return None
    value = environ.get(CLI_SERVER_IDLE.env)
    return _seconds(CLI_SERVER_IDLE, value) if value else 1800.0


LOCAL_SERVER_IDLE = Duration("DSTACK_LOCAL_SERVER_IDLE_TIMEOUT", "local_server_idle_timeout")
"""How long the local server (and its runner) stays up with no job unfinished and no
request but its runner's: `EnvSettings.local_server_idle_timeout`; 0 keeps it up."""


class EnvSettings(NamedTuple):
    """What the `DSTACK_*` variables say; None (or no entry) where a variable is unset or
    empty, so the code's defaults apply."""

    home: Path
    executor: str | None = None
    server_admin_token: str | None = None
    server_secret_key: str | None = None
    server_durations: Mapping[str, float] = MappingProxyType({})
    """`ServerSettings` field → seconds, for the `SERVER_DURATIONS` that are set."""
    local_server_start_timeout: float = 30.0
    local_server_idle_timeout: float = 1800.0
    images: Mapping[str, str] = MappingProxyType({})
    """`ImageSettings` field → template, for `DSTACK_DEFAULT_IMAGE` and
    `DSTACK_DEFAULT_GPU_IMAGE` where set."""
    runner_crash_at: str | None = None
    runner_crash_count: Path | None = None
    upload_confirm_bytes: int = 10 * 2**20
    """`dstack run` asks before uploading local changes bigger than this (on a terminal)."""

    @classmethod
    def read(cls, environ: Mapping[str, str]) -> EnvSettings:
        """Read `environ`; raises `ConfigError` naming the variable on a value that is not
        valid (an unknown executor, a duration that is not a number or below its minimum)."""
        # paths (and pathlib, ~10 ms): not before a command the CLI's command server serves,
        # which reads only `cli_server`
        from dstack.paths import resolve_home

        return cls(
            home=resolve_home(environ.get(HOME)),
            executor=_executor(environ.get(EXECUTOR) or None),
            server_admin_token=environ.get(SERVER_ADMIN_TOKEN) or None,
            server_secret_key=environ.get(SERVER_SECRET_KEY) or None,
            server_durations={
                d.field: _seconds(d, environ[d.env]) for d in SERVER_DURATIONS if environ.get(d.env)
            },
            local_server_start_timeout=(
                _seconds(LOCAL_SERVER_START, environ[LOCAL_SERVER_START.env])
                if environ.get(LOCAL_SERVER_START.env)
                else 30.0
            ),
            local_server_idle_timeout=(
                _seconds(LOCAL_SERVER_IDLE, environ[LOCAL_SERVER_IDLE.env])
                if environ.get(LOCAL_SERVER_IDLE.env)
                else 1800.0
            ),
            images={
                field: environ[name]
                for field, name in (
                    ("default_image", DEFAULT_IMAGE),
                    ("default_gpu_image", DEFAULT_GPU_IMAGE),
                )
                if environ.get(name)
            },
            runner_crash_at=environ.get(RUNNER_TEST_CRASH_AT) or None,
            runner_crash_count=_path(environ.get(RUNNER_TEST_CRASH_COUNT)),
            upload_confirm_bytes=_bytes(UPLOAD_CONFIRM_SIZE, environ.get(UPLOAD_CONFIRM_SIZE)),
        )

    @property
    def layout(self) -> HomeLayout:
        from dstack.paths import HomeLayout  # see `read`

        return HomeLayout(self.home)


def fault_hooks(environ: Mapping[str, str]) -> Path | None:
    """The fault-injection suite's hooks folder (`DSTACK_RUNNER_FAULT_HOOKS`), read at each
    pause point rather than once: see `dstack.runner.faults`."""
    return _path(environ.get(RUNNER_FAULT_HOOKS))


def _path(value: str | None) -> Path | None:
    from pathlib import Path  # see `read`

    return Path(value) if value else None


def _executor(value: str | None) -> str | None:
    if value is not None and value not in EXECUTORS:
        raise ConfigError(
            f"invalid {EXECUTOR} '{value}'", hint=f"use one of: {', '.join(EXECUTORS)}"
        )
    return value


_UNITS = {"": 1, "b": 1, "kb": 2**10, "mb": 2**20, "gb": 2**30, "tb": 2**40}


def _bytes(name: str, text: str | None, default: int = 10 * 2**20) -> int:
    """`10MB`, `500KiB`, `1GB`, `2000` (bytes): powers of 1024 whether written `MB` or
    `MiB`, as every size dstack reads and shows (`dstack.models.sizes`)."""
    if not text:
        return default
    number = text.strip().rstrip("bBiIkKmMgGtT")
    unit = text.strip()[len(number) :].lower().replace("i", "")
    if unit and not unit.endswith("b"):
        unit += "b"  # `5k`, `10M`
    try:
        value = float(number) * _UNITS[unit]
    except (ValueError, KeyError):
        value = float("nan")
    if not value >= 0 or value == float("inf"):
        raise ConfigError(f"invalid {name} '{text}'", hint="give a size such as 10MB or 500kB")
    return int(value)


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
