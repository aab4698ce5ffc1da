"""Entry point of the background local server: `python -m dstack.server.local_main --home H`.

Binds 127.0.0.1 on a free port, and writes `server.json` (url, pid, version, executor,
started_at) only once it is listening, so whoever reads that file can connect at once. It
inherits the environment of the command that started it: `DSTACK_EXECUTOR` (unless
`--executor`), the `DSTACK_SERVER_*` grace periods and timeouts and
`DSTACK_LOCAL_SERVER_IDLE_TIMEOUT` (`dstack.settings`) apply to it.

Its start is what the first command of the day waits for, so it detaches before importing
the server, and starts its runner (whose own start takes about as long) as soon as its port
is bound, while it imports and opens its database. With `--detach` it prints its pid, then,
once it listens, its URL, and closes its standard output: the command that started it
reads that line instead of polling for `server.json`. Once up it sleeps until a request comes:
no timer of its own wakes it. With no job unfinished and no request but its runner's for
the idle timeout, it exits, and its runner with it; the next command starts it again.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib
import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from dstack import __version__
from dstack.paths import HomeLayout
from dstack.pidlock import PidLock, lock_holder
from dstack.server.settings import ServerSettings, make_private_dir
from dstack.settings import EXECUTORS, EnvSettings

if TYPE_CHECKING:
    import socket

    from dstack.server.listen import QuietServer
    from dstack.server.local_runner import LocalRunnerSupervisor

logger = logging.getLogger("dstack.server.local")

BUSY = "busy"
"""What `--detach` prints instead of a URL when another server holds the home (then that
server's pid): the command that started this one waits for that one instead."""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="dstack.server.local_main")
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--executor", choices=EXECUTORS, default=None)
    parser.add_argument("--no-runner", action="store_true", help="Do not start a local runner.")
    parser.add_argument(
        "--detach", type=Path, metavar="LOG", help="Run in the background, output to LOG."
    )
    args = parser.parse_args(argv)
    # The start makes a few hundred thousand objects (modules, models, routes) and frees
    # almost none: the collector, which walks them again at every few hundred allocations,
    # is paused until the server listens (~0.1 s of the start), where they are frozen.
    gc.disable()
    ready = _detach(args.detach) if args.detach else None
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
                idle_timeout=env.local_server_idle_timeout,
                ready=ready,
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
    idle_timeout: float = 0.0,
    ready: IO[str] | None = None,
) -> None:
    """Serve until cancelled, or idle for `idle_timeout` seconds (0: never); `durations`:
    `ServerSettings` grace periods and timeouts (field → seconds) other than the defaults.
    Once listening, the URL is written to `ready`, which is then closed."""
    # after `_detach`: the command that started this server gets the pid at once
    from dstack.server.listen import tcp_socket
    from dstack.server.local_runner import LocalRunnerSupervisor
    from dstack.server.tokens import load_or_create_token

    files = HomeLayout(home).server
    make_private_dir(files.dir)
    lock = PidLock(files.server_lock)
    if not lock.try_acquire():
        # A command that started a server and died before it listened let the next one
        # start another: that one leaves the home to the first, which it says it waits for.
        holder = lock_holder(files.server_lock)
        logger.info("another local server (pid %s) has this home: this one exits", holder)
        if ready is not None:
            _announce(ready, f"{BUSY} {holder or ''}".rstrip())
        return
    # Left by a server that was killed: nobody answers there.
    _remove_if_not(files.server_json, os.getpid())
    sock = tcp_socket("127.0.0.1", 0)
    settings = ServerSettings(
        home=home,
        token=load_or_create_token(files.token),
        port=sock.getsockname()[1],
        local_runner=runner,
        local_runner_executor=executor,
    ).with_durations(durations or {})
    supervisor = None
    if runner:
        supervisor = LocalRunnerSupervisor(settings, token=secrets.token_urlsafe(32))
        supervisor.start_early()
    try:
        await _serve(settings, sock, supervisor, idle_timeout, ready)
    finally:
        if supervisor is not None:  # stopped already, unless the server failed to start
            await asyncio.to_thread(supervisor.terminate)


async def _serve(
    settings: ServerSettings,
    sock: socket.socket,
    supervisor: LocalRunnerSupervisor | None,
    idle_timeout: float,
    ready: IO[str] | None,
) -> None:
    # the server (~1 s of imports), once its runner started: both start at once
    from dstack.server.app import create_app
    from dstack.server.listen import QuietServer, server_config

    app = create_app(settings, local_runner=supervisor)
    meter = ActivityMeter(app)
    # Long-polls (claims, logs) answer once the server drains (`listen.DrainingServer`);
    # the 2 s bound is for any other request that hangs. No
    # access log: a line per request is CPU this server spends on nobody's behalf.
    config = server_config(
        meter,  # type: ignore[arg-type]
        access_log=False,
        keep_alive=settings.keep_alive_seconds,
        timeout_graceful_shutdown=2,
        date_header=False,
        # Its WebSocket peers (its runner's tunnel, a local `dstack attach`) are on this
        # machine: one that goes away closes its socket. No keepalive pings, which woke
        # this server every 20 s per connection while nothing happened.
        ws_ping_interval=None,
    )
    server = QuietServer(config, app)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.01)
    info = settings.files.server_json
    watch = None
    if server.started:
        about = {"url": settings.url, "pid": os.getpid(), "version": __version__}
        executor = settings.local_runner_executor
        _write_json(info, {**about, "executor": executor, "started_at": time.time()})
        logger.info("listening at %s", settings.url)
        _freeze_heap()
        if ready is not None:
            _announce(ready, settings.url)
        if idle_timeout > 0:
            watch = asyncio.create_task(_exit_when_idle(server, meter, idle_timeout))
    try:
        await task
    finally:
        if watch is not None:
            watch.cancel()
        _remove_if_ours(info)


class ActivityMeter:
    """An ASGI wrapper noting when the last request came that was not the local runner's
    own (its heartbeats, claims and registration, under `/api/runners/`)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.last = time.monotonic()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan" and not scope["path"].startswith("/api/runners/"):
            self.last = time.monotonic()
        await self.app(scope, receive, send)


async def _exit_when_idle(server: QuietServer, meter: ActivityMeter, timeout: float) -> None:
    """Stop `server` once it had no request but its runner's for `timeout` seconds while no
    job was unfinished (a job running for days keeps it up)."""
    from dstack.server.services.jobs import server_busy  # imported by the app meanwhile

    while True:
        left = meter.last + timeout - time.monotonic()
        if left > 0:
            await asyncio.sleep(left)
            continue
        if await server_busy(meter.app.state.ctx):
            meter.last = time.monotonic()
            continue
        logger.info(
            "no job and no request for %s: the local server exits "
            "(the next dstack command starts it again)",
            _duration(timeout),
        )
        server.stop()
        return


def _freeze_heap() -> None:
    """Move what the start made (modules, schemas, routes: alive for good) out of the
    collector's sight, and let it run again: its full collections then walk only what
    requests made since, instead of pausing every request in flight for tens of
    milliseconds. (The start's few cycles of garbage, paused with the collector, stay.)"""
    gc.freeze()
    gc.enable()


def _announce(ready: IO[str], line: str) -> None:
    """Tell the command that started this server (reading `--detach`'s output) where it
    listens, or that another server has the home (`BUSY`); that command may be gone."""
    with contextlib.suppress(OSError), ready:
        ready.write(f"{line}\n")


def _duration(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def _detach(log: Path) -> IO[str]:
    """Fork into a new session: the parent prints the server's pid and exits at once, so the
    caller neither waits for nor reaps the server. The server's output goes to `log`; its
    former standard output is returned, for `_announce`."""
    pid = os.fork()
    if pid > 0:
        print(pid, flush=True)
        os._exit(0)
    os.setsid()
    ready = os.fdopen(os.dup(1), "w")  # not inherited by the runner (PEP 446)
    devnull = os.open(os.devnull, os.O_RDONLY)
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(devnull, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(devnull)
    os.close(out)
    return ready


def _write_json(path: Path, data: dict[str, object]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
        out.write(json.dumps(data))
    os.replace(tmp, path)


def _remove_if_ours(path: Path) -> None:
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()


def _remove_if_not(path: Path, pid: int) -> None:
    """Remove `server.json` unless it names `pid`: only the holder of the home's lock calls
    this, so any other server it names is gone."""
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text()).get("pid") != pid:
            path.unlink()


if __name__ == "__main__":
    main()
