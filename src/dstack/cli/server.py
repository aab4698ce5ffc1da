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
    "--local-runner/--no-local-runner",
    default=False,
    show_default=True,
    help="Also start a runner on this machine.",
)
def server(host: str, port: int, home: Path | None, local_runner: bool) -> None:
    """Run a dstack server in the foreground until interrupted."""
    import uvicorn

    from dstack.server.app import create_app
    from dstack.server.settings import ServerSettings
    from dstack.server.tokens import load_or_create_token

    home = home or Path(os.environ.get("DSTACK_HOME") or Path.home() / ".dstack")
    token_file = home / "server" / "token"
    settings = ServerSettings(
        home=home,
        token=load_or_create_token(token_file),
        host=host,
        port=port,
        local_runner=local_runner,
        local_runner_executor=os.environ.get("DSTACK_EXECUTOR") or None,
    )
    click.echo(f"dstack server: {settings.url}")
    click.echo(f"token: in {token_file}")
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")
