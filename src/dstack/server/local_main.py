"""Entry point of the background local server: `python -m dstack.server.local_main --home H`.

Binds 127.0.0.1 on a free port, and writes `server.json` (url, pid, version, executor,
started_at) only once it is listening, so whoever reads that file can connect at once. It
inherits the environment of the command that started it: `DSTACK_EXECUTOR` (unless
`--executor`) and the `DSTACK_SERVER_*` grace periods and timeouts (`dstack.settings`) apply
to it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import uvicorn

from dstack import __version__
from dstack.paths import HomeLayout
from dstack.server.app import create_app
from dstack.server.listen import server_config, tcp_socket
from dstack.server.settings import ServerSettings, make_private_dir
from dstack.server.tokens import load_or_create_token
from dstack.settings import EXECUTORS, EnvSettings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="dstack.server.local_main")
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--executor", choices=EXECUTORS, default=None)
    parser.add_argument("--no-runner", action="store_true", help="Do not start a local runner.")
    parser.add_argument(
        "--detach", type=Path, metavar="LOG", help="Run in the background, output to LOG."
    )
    args = parser.parse_args(argv)
    if args.detach:
        _detach(args.detach)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    env = EnvSettings.read(os.environ)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(
            serve(
                args.home,
                executor=args.executor or env.executor,
                runner=not args.no_runner,
                durations=env.server_durations,
            )
        )


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where it is installed (it is a dependency where it builds), else
    asyncio's: what uvicorn picks by itself when it makes the loop."""
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


async def serve(
    home: Path,
    *,
    executor: str | None,
    runner: bool,
    durations: Mapping[str, float] | None = None,
) -> None:
    """Serve until cancelled; `durations`: `ServerSettings` grace periods and timeouts
    (field → seconds) other than the defaults."""
    files = HomeLayout(home).server
    make_private_dir(files.dir)
    sock = tcp_socket("127.0.0.1", 0)
    settings = ServerSettings(
        home=home,
        token=load_or_create_token(files.token),
        port=sock.getsockname()[1],
        local_runner=runner,
        local_runner_executor=executor,
        freeze_heap_at_start=True,
    ).with_durations(durations or {})
    # Long-polls (claims, logs) would hold a graceful shutdown for their whole wait. No
    # access log: a line per request is CPU this server spends on nobody's behalf.
    config = server_config(
        create_app(settings),
        access_log=False,
        keep_alive=settings.keep_alive_seconds,
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.05)
    info = files.server_json
    if server.started:
        about = {"url": settings.url, "pid": os.getpid(), "version": __version__}
        _write_json(info, {**about, "executor": executor, "started_at": time.time()})
    try:
        await task
    finally:
        _remove_if_ours(info)


def _detach(log: Path) -> None:
    """Fork into a new session: the parent prints the server's pid and exits at once, so the
    caller neither waits for nor reaps the server."""
    pid = os.fork()
    if pid > 0:
        print(pid, flush=True)
        os._exit(0)
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDONLY)
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(devnull, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(devnull)
    os.close(out)


def _write_json(path: Path, data: dict[str, object]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
        out.write(json.dumps(data))
    os.replace(tmp, path)


def _remove_if_ours(path: Path) -> None:
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()


if __name__ == "__main__":
    main()
