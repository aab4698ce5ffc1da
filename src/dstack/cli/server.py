"""`dstack server`: run a server in the foreground (a team server, or to debug)."""

from __future__ import annotations

import os
from pathlib import Path

import click


@click.command()
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
@click.option(
    "--runner-timeout",
    type=float,
    default=15.0,
    show_default=True,
    metavar="SECONDS",
    help="Mark a runner offline after this long without a heartbeat.",
)
@click.option(
    "--provisioning-timeout",
    type=click.FloatRange(min=1),
    default=300.0,
    show_default=True,
    metavar="SECONDS",
    help="Re-queue a claimed job (once; then fail it) whose runner does not confirm it in time.",
)
@click.option(
    "--downloading-timeout",
    type=click.FloatRange(min=1),
    default=3600.0,
    show_default=True,
    metavar="SECONDS",
    help="Fail a job that downloads its code, inputs or image for longer.",
)
@click.option(
    "--uploading-timeout",
    type=click.FloatRange(min=1),
    default=3600.0,
    show_default=True,
    metavar="SECONDS",
    help="Fail a job whose final artifact upload takes longer.",
)
@click.option(
    "--access-log/--no-access-log",
    default=False,
    show_default=True,
    help="Log a line for every HTTP request.",
)
def server(
    host: str,
    port: int,
    home: Path | None,
    database_url: str | None,
    storage: str | None,
    s3_endpoint_url: str | None,
    local_runner: bool,
    runner_timeout: float,
    provisioning_timeout: float,
    downloading_timeout: float,
    uploading_timeout: float,
    access_log: bool,
) -> None:
    """Run a dstack server in the foreground until interrupted."""
    # The server is imported here, once the options are checked: `dstack server --help` and
    # a bad option answer without it (about 1 s).
    import uvicorn

    from dstack.server.app import create_app
    from dstack.server.settings import ServerSettings

    home = home or Path(os.environ.get("DSTACK_HOME") or Path.home() / ".dstack")
    # Without DSTACK_SERVER_ADMIN_TOKEN the first start generates the admin token, prints it
    # once and keeps it in <home>/server/admin_token.
    settings = ServerSettings(
        home=home,
        token=os.environ.get("DSTACK_SERVER_ADMIN_TOKEN") or None,
        secret_key=os.environ.get("DSTACK_SERVER_SECRET_KEY") or None,
        host=host,
        port=port,
        database_url=_database_url(database_url),
        storage=_storage(storage),
        s3_endpoint_url=s3_endpoint_url,
        local_runner=local_runner,
        runner_heartbeat_timeout=runner_timeout,
        provisioning_timeout=provisioning_timeout,
        downloading_timeout=downloading_timeout,
        uploading_timeout=uploading_timeout,
        local_runner_executor=os.environ.get("DSTACK_EXECUTOR") or None,
        freeze_heap_at_start=True,
    )
    click.echo(f"dstack server: {settings.url}")
    from dstack.server.listen import server_config, tcp_socket  # see above

    sock = tcp_socket(host, port)
    config = server_config(create_app(settings), access_log=access_log)
    uvicorn.Server(config).run(sockets=[sock])


def _database_url(url: str | None) -> str | None:
    # Checked before anything starts, so a typo is one line, not a failed start-up.
    from dstack.server.db.engine import normalize_url

    return normalize_url(url) if url else None


def _storage(url: str | None) -> str | None:
    if url:
        from dstack.storage.s3 import parse_s3_url  # the S3 module only for --storage

        parse_s3_url(url)
    return url
