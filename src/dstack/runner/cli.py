"""`dstack-runner start --server URL --token T ...`: run a runner in the foreground.

This is the runner's own entry point, so it prints its errors itself: one line and the hint,
exit code 1.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import click

from dstack import __version__
from dstack.api.runner import RunnerClient
from dstack.errors import ConfigError, DstackError
from dstack.models.resources import parse_memory_mib
from dstack.providers.images import ImageSettings
from dstack.runner.clone import GitTimeouts
from dstack.runner.daemon import Runner
from dstack.runner.follow import ServerFollower
from dstack.runner.jobuser import default_job_user, is_own_user
from dstack.runner.settings import RunnerSettings
from dstack.settings import (
    RUNNER_JOB_USER,
    RUNNER_METADATA_URL,
    RUNNER_MIN_FREE_DISK,
    RUNNER_TOKEN,
    EnvSettings,
)


def parse_labels(text: str | None) -> dict[str, str]:
    """`k=v,k2=v2` → dict; raises `ConfigError` on an item without `=`."""
    labels: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"invalid label '{item}' in --labels", "write labels as key=value,key2=value2"
            )
        labels[key.strip()] = value.strip()
    return labels


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-v", "--version", prog_name="dstack-runner")
def cli() -> None:
    """The dstack runner: runs the jobs a dstack server hands it."""


@cli.command()
@click.option("--server", "server_url", required=True, help="URL of the dstack server.")
@click.option(
    "--token",
    required=True,
    envvar=RUNNER_TOKEN,
    help="Registration token (`dstack runners token`); it only registers: the runner's own "
    "credential is then kept in WORK_DIR/credential.json.",
)
@click.option("--name", default=None, help="Name shown by `dstack runners` (default: hostname).")
@click.option(
    "--work-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Where jobs' code and log spools live (default: $DSTACK_HOME/runner, ~/.dstack/runner).",
)
@click.option(
    "--executor",
    type=click.Choice(["docker", "process"]),
    default=None,
    help="How jobs run (default: docker when an engine answers, else process).",
)
@click.option("--labels", default=None, help="Labels jobs can select, `k=v,k2=v2`.")
@click.option(
    "--stop-grace",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds between SIGTERM and SIGKILL when a job is stopped.",
)
@click.option(
    "--job-user",
    default=None,
    envvar=RUNNER_JOB_USER,
    help="User process jobs run as, created when missing (default: dstack-job when started "
    "as root, else the runner's own user; the runner's own user name opts out).",
)
@click.option(
    "--min-free-disk",
    default="1GB",
    show_default=True,
    envvar=RUNNER_MIN_FREE_DISK,
    help="Take no job while the folder of the jobs has less free disk (`512MB`, `2GB`, `0`).",
)
@click.option(
    "--server-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    hidden=True,
    help="The local server's server.json: follow the URL it names (the local server that "
    "started the runner restarts on a new port), and exit once orphaned.",
)
@click.option(
    "--orphan-timeout",
    type=float,
    default=600.0,
    show_default=True,
    help="With --server-file: seconds the server may stay unreachable before an idle runner "
    "exits (running jobs are never given up for it).",
)
@click.option(
    "--metadata-url",
    default=None,
    envvar=RUNNER_METADATA_URL,
    help="Instance metadata service to watch for spot interruption notices (EC2: "
    "http://169.254.169.254); on a notice the runner saves its jobs' artifacts and logs and "
    "hands them back to the server. Default: not watched.",
)
@click.option(
    "--metadata-interval",
    type=click.FloatRange(min=0.1, max=300),
    default=5.0,
    show_default=True,
    help="With --metadata-url: seconds between two looks for a notice.",
)
@click.option(
    "--heartbeat-interval",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    help="Seconds between two heartbeats (keep it well under the server's --runner-timeout).",
)
@click.option(
    "--claim-wait",
    type=click.FloatRange(min=0, max=60),
    default=10.0,
    show_default=True,
    help="Seconds one request for a job may wait at the server for one to come.",
)
@click.option(
    "--git-fetch-timeout",
    type=click.FloatRange(min=1),
    default=GitTimeouts().fetch,
    show_default=True,
    help="Seconds a `git fetch` of a cloned repository may take before its job fails.",
)
@click.option(
    "--git-lock-timeout",
    type=click.FloatRange(min=1),
    default=GitTimeouts().lock,
    show_default=True,
    help="Seconds a job waits for the mirror another job of this runner is updating.",
)
@click.option(
    "--address",
    default=None,
    help="Address other runners reach this one at (the primary node's is the other nodes' "
    "MASTER_ADDR in multi-node runs). Default: this machine's source address of the route "
    "to the server.",
)
def start(
    server_url: str,
    token: str,
    name: str | None,
    work_dir: Path | None,
    executor: str | None,
    labels: str | None,
    stop_grace: float,
    job_user: str | None,
    min_free_disk: str,
    server_file: Path | None,
    orphan_timeout: float,
    metadata_url: str | None,
    metadata_interval: float,
    heartbeat_interval: float,
    claim_wait: float,
    git_fetch_timeout: float,
    git_lock_timeout: float,
    address: str | None,
) -> None:
    """Register with the server and run jobs until interrupted."""
    env = EnvSettings.read(os.environ)
    job_user = job_user or default_job_user()
    if job_user is not None and is_own_user(job_user):
        logging.getLogger(__name__).warning(
            "process jobs run as %s, the runner's own user: they can read its credential",
            job_user,
        )
        job_user = None

    settings = RunnerSettings(
        server_url=server_url,
        token=token,
        executor=executor,
        labels=parse_labels(labels),
        stop_grace=stop_grace,
        images=ImageSettings(**env.images),
        job_user=job_user,
        min_free_disk_mib=_size_mib(min_free_disk, "--min-free-disk"),
        server_file=server_file,
        orphan_exit_after=orphan_timeout,
        metadata_url=metadata_url or None,
        metadata_interval=metadata_interval,
        heartbeat_interval=heartbeat_interval,
        claim_wait=claim_wait,
        git_timeouts=GitTimeouts(fetch=git_fetch_timeout, lock=git_lock_timeout),
        crash_point=crash_point(env),
        address=address or None,
    )
    if name:
        settings = dataclasses.replace(settings, name=name)
    if work_dir:
        settings = dataclasses.replace(settings, work_dir=work_dir.resolve())
    api = RunnerClient(server_url, token)
    runner = Runner(settings, api)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        runner.shutdown()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    follower = None
    if server_file is not None:
        follower = ServerFollower(
            runner, server_file, rebase=api.transport.rebase, orphan_exit_after=orphan_timeout
        ).start()
        api.transport.on_no_answer = follower.notice
    _resume_collector()
    try:
        runner.run()
    finally:
        if follower is not None:
            follower.stop()
        api.close()


def _resume_collector() -> None:
    """When the entry point paused the garbage collector for the start (`__main__`): move
    what the start made (modules, models: alive for good) out of its sight, and let it run
    again, so that its full collections walk only what jobs make."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def _size_mib(text: str, option: str) -> int:
    try:
        return parse_memory_mib(text)
    except ValueError as exc:
        raise ConfigError(f"invalid {option}: {exc}", "write a size such as 512MB or 2GB") from None


def crash_point(env: EnvSettings) -> Callable[[str], None] | None:
    """For fault tests only: the runner kills itself (SIGKILL, as a crash would) at the
    `RunnerSettings.crash_point` named by `DSTACK_RUNNER_TEST_CRASH_AT`, as long as the file
    named by `DSTACK_RUNNER_TEST_CRASH_COUNT` holds a positive number, which each crash
    decrements (so the restarted runner gets past that point)."""
    target, counter = env.runner_crash_at, env.runner_crash_count
    if not target or counter is None:
        return None
    path = counter

    def crash(point: str) -> None:
        if point != target:
            return
        try:
            left = int(path.read_text().strip() or "0")
        except (OSError, ValueError):
            return
        if left > 0:
            path.write_text(str(left - 1))
            os.kill(os.getpid(), signal.SIGKILL)

    return crash


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # httpx logs every request at INFO: a line per heartbeat and per claim poll would bury
    # the runner's own messages. Its failures reach the log as the runner's warnings.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        cli.main(
            sys.argv[1:] if argv is None else argv, prog_name="dstack-runner", standalone_mode=False
        )
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except DstackError as exc:
        click.echo(f"error: {exc.message}", err=True)
        if exc.hint:
            click.echo(f"hint: {exc.hint}", err=True)
        sys.exit(1)
