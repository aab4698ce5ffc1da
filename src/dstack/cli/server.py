"""`dstack server [OPTIONS]`: run a server in the foreground (a team server, or to debug);
`dstack server status | stop`: the local server other commands start in the background."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from dstack.cli.context import cli_env
from dstack.errors import ConfigError
from dstack.settings import SERVER_DURATIONS

F = TypeVar("F", bound=Callable[..., Any])


def _timeout(flag: str, default: int, what: str) -> Callable[[F], F]:
    """A `--...-timeout SECONDS` option; None when not given (the server's setting, or its
    `DSTACK_SERVER_...` variable, applies)."""
    suffix = "_" + flag.removeprefix("--").replace("-", "_").upper()
    (variable,) = (d.env for d in SERVER_DURATIONS if d.env.endswith(suffix))
    return click.option(
        flag,
        type=click.FloatRange(min=1),
        default=None,
        show_default=f"{default}, or ${variable}",
        metavar="SECONDS",
        help=what,
    )


@click.group(invoke_without_command=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=3000, show_default=True, type=int, help="Port to bind.")
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="dstack home (default: $DSTACK_HOME or ~/.dstack).",
)
@click.option(
    "--database-url",
    default=None,
    metavar="URL",
    help="Database (default: SQLite in the dstack home), e.g. postgresql+asyncpg://u:p@host/db.",
)
@click.option(
    "--storage",
    default=None,
    metavar="s3://BUCKET/PREFIX",
    help="Where artifacts are stored (default: a folder in the dstack home).",
)
@click.option(
    "--s3-endpoint-url",
    default=None,
    metavar="URL",
    help="An S3-compatible endpoint for --storage (MinIO, ...); default: AWS.",
)
@click.option(
    "--local-runner/--no-local-runner",
    default=False,
    show_default=True,
    help="Also start a runner on this machine.",
)
@_timeout("--runner-timeout", 15, "Mark a runner offline after this long without a heartbeat.")
@_timeout(
    "--provisioning-timeout",
    300,
    "Re-queue a claimed job (once; then fail it) whose runner does not confirm it in time.",
)
@_timeout(
    "--downloading-timeout",
    3600,
    "Fail a job that downloads its code, inputs or image for longer.",
)
@_timeout("--uploading-timeout", 3600, "Fail a job whose final artifact upload takes longer.")
@click.option(
    "--public-url",
    default=None,
    metavar="URL",
    callback=lambda _ctx, _param, value: _public_url(value),
    help="The URL cloud instances reach this server at (their runners dial it); "
    "default: http://HOST:PORT.",
)
@click.option(
    "--access-log/--no-access-log",
    default=False,
    show_default=True,
    help="Log a line for every HTTP request.",
)
@click.pass_context
def server(
    ctx: click.Context,
    host: str,
    port: int,
    home: Path | None,
    database_url: str | None,
    storage: str | None,
    s3_endpoint_url: str | None,
    local_runner: bool,
    runner_timeout: float | None,
    provisioning_timeout: float | None,
    downloading_timeout: float | None,
    uploading_timeout: float | None,
    public_url: str | None,
    access_log: bool,
) -> None:
    """Run a dstack server in the foreground until interrupted.

    Its other grace periods and timeouts: the `DSTACK_SERVER_*` variables (README, "Settings").
    `dstack server status` and `dstack server stop` tell of and stop the local server that
    the other commands start in the background.
    """
    if ctx.invoked_subcommand is not None:
        return
    # The server is imported here, once the options are checked: `dstack server --help` and
    # a bad option answer without it (about 1 s).
    from dstack.server.app import create_app
    from dstack.server.settings import ServerSettings

    env = cli_env()
    options = {
        "runner_heartbeat_timeout": runner_timeout,
        "provisioning_timeout": provisioning_timeout,
        "downloading_timeout": downloading_timeout,
        "uploading_timeout": uploading_timeout,
    }
    # Without DSTACK_SERVER_ADMIN_TOKEN the first start generates the admin token, prints it
    # once and keeps it in <home>/server/admin_token.
    settings = ServerSettings(
        home=home or env.home,
        token=env.server_admin_token,
        secret_key=env.server_secret_key,
        host=host,
        port=port,
        database_url=_database_url(database_url),
        storage=_storage(storage),
        s3_endpoint_url=s3_endpoint_url,
        local_runner=local_runner,
        local_runner_executor=env.executor,
        public_url=public_url,
        freeze_heap_at_start=True,
    ).with_durations({**env.server_durations, **_given(options)})
    click.echo(f"dstack server: {settings.url}")
    if public_url:
        click.echo(f"Cloud instances reach it at {settings.resolved_public_url()}")
    from dstack.server.listen import DrainingServer, server_config, tcp_socket  # see above

    sock = tcp_socket(host, port)
    app = create_app(settings)
    config = server_config(app, access_log=access_log, keep_alive=settings.keep_alive_seconds)
    DrainingServer(config, app).run(sockets=[sock])


def _given(options: dict[str, float | None]) -> dict[str, float]:
    return {name: value for name, value in options.items() if value is not None}


def _database_url(url: str | None) -> str | None:
    # Checked before anything starts, so a typo is one line, not a failed start-up.
    from dstack.server.db.engine import normalize_url

    return normalize_url(url) if url else None


def _public_url(url: str | None) -> str | None:
    if not url:
        return None
    from dstack.server.settings import check_public_url  # ~2 ms: `--help` skips it

    try:
        return check_public_url(url)
    except ConfigError as exc:
        raise click.BadParameter(f"{exc.message} ({exc.hint})") from None


def _storage(url: str | None) -> str | None:
    if url:
        from dstack.storage.s3 import parse_s3_url  # the S3 module only for --storage

        parse_s3_url(url)
    return url


@server.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(as_json: bool) -> None:
    """Whether the local background server runs: its URL, pid, uptime, version, executor and
    runner. Starts nothing."""
    found = _local_status(cli_env().home)
    if as_json:
        # json: only `status --json`
        import json

        click.echo(json.dumps(found, indent=2))
    else:
        click.echo(_render_status(found))


@server.command("stop")
def stop() -> None:
    """Stop the local background server and its runner, which stops the jobs it runs."""
    # server.local: ~40 ms that `dstack server` in the foreground skips
    from dstack.server.local import (
        local_runner_pid,
        local_server_pid,
        read_local_server,
        stop_local_server,
    )

    home = cli_env().home
    info = read_local_server(home)
    pid = local_server_pid(home)
    runner = local_runner_pid(home)
    if stop_local_server(home):
        where = info.url if info is not None else "still starting"
        click.echo(f"Stopped the local server (pid {pid}, {where}).")
    elif runner is not None:
        click.echo(f"No local server was running; stopped its runner (pid {runner}).")
    else:
        click.echo("No local server is running.")


def _local_status(home: Path) -> dict[str, Any]:
    """`dstack server status --json`: `running`, and when it runs `url`, `pid`, `version`,
    `executor` (null: the runner's default), `started_at` (ISO 8601, UTC), `uptime_seconds`
    and `runner` (`pid`, `status`, `executors`; null fields where unknown)."""
    # time, datetime and server.local: only `dstack server status`
    import time
    from datetime import UTC, datetime

    from dstack.server.local import live_local_server, local_runner_pid

    info = live_local_server(home)
    runner_pid = local_runner_pid(home)
    if info is None:
        return {"running": False, "runner": {"pid": runner_pid} if runner_pid else None}
    started = info.started_at
    return {
        "running": True,
        "url": info.url,
        "pid": info.pid,
        "version": info.version,
        "executor": info.executor,
        "started_at": None if started is None else datetime.fromtimestamp(started, UTC).isoformat(),
        "uptime_seconds": None if started is None else round(time.time() - started),
        "runner": {"pid": runner_pid, **_runner_state(info.url, home)},
    }


def _runner_state(url: str, home: Path) -> dict[str, Any]:
    """The local runner as the server sees it; `status` null when the server does not say."""
    # the HTTP client: ~150 ms only a running local server's status needs
    from dstack.api.client import Client
    from dstack.errors import DstackError
    from dstack.paths import HomeLayout

    token = HomeLayout(home).server.token.read_text().strip()
    client = Client(url, token)
    try:
        runners = client.list_runners()
    except DstackError:
        runners = []
    finally:
        client.close()
    found = next((r for r in runners if r.name == "local"), None)
    if found is None:
        return {"status": None, "executors": []}
    return {"status": found.status.value, "executors": found.executors}


def _render_status(found: dict[str, Any]) -> str:
    # render (rich): only `status` prints a duration
    from dstack.cli.render import duration

    runner = found.get("runner") or {}
    if not found["running"]:
        lines = ["No local server is running (other commands start it when they need it)."]
        if runner.get("pid"):
            lines.append(f"Its runner (pid {runner['pid']}) still runs; `dstack server stop`.")
        return "\n".join(lines)
    state = runner.get("status") or "not registered yet"
    executors = ", ".join(runner.get("executors") or []) or "-"
    rows = [
        ("server", f"running at {found['url']} (pid {found['pid']})"),
        ("uptime", duration(found["uptime_seconds"])),
        ("version", found["version"] or "-"),
        ("executor", found["executor"] or "default (docker when an engine answers)"),
        ("runner", f"{state} (pid {runner.get('pid') or '-'}, executors: {executors})"),
    ]
    return "\n".join(f"{name + ':':<10}{value}" for name, value in rows)
