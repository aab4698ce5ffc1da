"""The local server: started on demand in the background, reused while it answers.

Files in `<home>/server/` (0700; `dstack.paths.ServerFiles`): `server.json` (url, pid,
version, executor, started_at) written by a server once it listens, `token` (mode 0600),
`server.log`, and `start.lock`, which makes racing CLIs start only one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from dstack.errors import ServerError
from dstack.paths import HomeLayout, ServerFiles
from dstack.pidlock import lock_holder
from dstack.server.settings import make_private_dir

_POLL = 0.02
_BUSY = "busy"  # `local_main.BUSY`: another server has the home


@dataclass(frozen=True)
class LocalServer:
    """What `server.json` says of the local server. Files of older servers name only `url`
    and `pid`: the rest is then None."""

    url: str
    pid: int
    version: str | None = None
    executor: str | None = None
    """The executor its runner was started with; None: the runner's own default."""
    started_at: float | None = None
    """When it started listening (seconds since the epoch)."""


def ensure_local_server(
    home: Path,
    *,
    executor: str | None = None,
    start_runner: bool = True,
    timeout: float = 30.0,
) -> tuple[str, str]:
    """Return (url, token) of the local server of `home`, starting it if none answers.

    `executor` is passed to the local runner (None: the server's own `$DSTACK_EXECUTOR`,
    else its default). Raises `ServerError` (with the end of `server.log`) when a started
    server does not come up within `timeout` seconds.
    """
    files = HomeLayout(home).server
    make_private_dir(files.dir)
    found = _live(files)
    if found is None:
        # filelock: ~9 ms that commands finding the server up (nearly all) never pay
        from filelock import FileLock, Timeout

        try:
            with FileLock(str(files.start_lock), timeout=timeout, mode=0o600):
                found = _live(files) or _start(home, executor, start_runner, timeout)
        except Timeout:
            raise ServerError(
                "another dstack command is starting the local server and it takes too long",
                hint=f"see {files.server_log}",
            ) from None
    return found.url, files.token.read_text().strip()


def read_local_server(home: Path) -> LocalServer | None:
    """What `server.json` says, or None when it is missing or unreadable."""
    try:
        data = json.loads(HomeLayout(home).server.server_json.read_text())
        started = data.get("started_at")
        return LocalServer(
            url=str(data["url"]),
            pid=int(data["pid"]),
            version=_text(data.get("version")),
            executor=_text(data.get("executor")),
            started_at=float(started) if isinstance(started, int | float) else None,
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def live_local_server(home: Path) -> LocalServer | None:
    """The local server of `home` when it runs and accepts connections; starts nothing."""
    return _live(HomeLayout(home).server)


def local_runner_pid(home: Path) -> int | None:
    """The pid of the runner working in the local runner's work dir, or None when none runs.
    (It may be an earlier server's runner, which outlives its server; `dstack.runner.follow`.)"""
    return lock_holder(HomeLayout(home).runner_dir / "runner.lock") or None


def local_server_pid(home: Path) -> int | None:
    """The pid of the local server of `home` as `server.json` names it, or of the one still
    starting (it has written no `server.json` yet, but holds the home's lock); None if none."""
    info = read_local_server(home)
    return info.pid if info is not None else lock_holder(HomeLayout(home).server.server_lock)


def stop_local_server(home: Path, *, timeout: float = 30.0) -> bool:
    """Stop the local server of `home` (and with it its runner); False if none was running.

    The server stops its runner as it exits; a runner still holding the work dir after that
    (one an earlier server left behind) is stopped as well. Each gets SIGTERM, then SIGKILL
    after `timeout` seconds."""
    pid = local_server_pid(home)
    stopped = False
    if pid:
        stopped = _pid_alive(pid)
        if stopped:
            _terminate(pid, timeout)
    with contextlib.suppress(FileNotFoundError):
        HomeLayout(home).server.server_json.unlink()
    runner = local_runner_pid(home)
    if runner is not None and _pid_alive(runner):
        _terminate(runner, timeout)
    return stopped


def _terminate(pid: int, timeout: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(_POLL)
    if _pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _live(files: ServerFiles) -> LocalServer | None:
    """The server `server.json` names, when its process exists and its port accepts a
    connection. `server.json` is written only once the server listens, so this is as good as
    a health request at a fraction of the cost (no HTTP client on every command); a server
    that accepts but then fails shows up as an error of the command's own request."""
    info = read_local_server(files.dir.parent)
    if info is None or not _process_exists(info.pid) or not files.token.exists():
        return None
    return info if _accepts(info.url) else None


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _accepts(url: str, timeout: float = 2.0) -> bool:
    """Whether a TCP connection to the host and port of `url` succeeds."""
    parts = urlsplit(url)
    if parts.hostname is None:
        return False
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def _pid_alive(pid: int) -> bool:
    import psutil  # ~10 ms: only stopping the server asks; `dstack ps` does not

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _start(home: Path, executor: str | None, start_runner: bool, timeout: float) -> LocalServer:
    """Start a server and wait until it listens: `local_main --detach` prints the server's
    pid, then its URL once it listens (no polling, no health request); its output closing
    before that means it exited."""
    files = HomeLayout(home).server
    command = [sys.executable, "-m", "dstack.server.local_main", "--home", str(home)]
    command += ["--detach", str(files.server_log)]
    if executor:
        command += ["--executor", executor]
    if not start_runner:
        command.append("--no-runner")
    deadline = time.monotonic() + timeout
    logged = _log_size(files)  # what earlier starts wrote
    try:
        launched = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    except OSError as exc:
        raise ServerError(
            f"cannot start the local server: {exc}", hint=f"see {files.server_log}"
        ) from exc
    with launched:
        assert launched.stdout is not None
        lines = _read_lines(launched.stdout.fileno(), 2, deadline)
        if not lines:  # it failed before detaching (or did not even get that far in time)
            launched.kill()
            error = (launched.communicate()[1] or b"").decode(errors="replace").strip()
            detail = error.splitlines()[-1] if error else f"exit code {launched.returncode}"
            raise ServerError(
                f"cannot start the local server: {detail}", hint=f"see {files.server_log}"
            )
        launched.wait()  # the parent of the fork, which exits once it printed the pid
    # The pid comes first, but from another process than the URL: either order is read.
    pid_line = next((line for line in lines if line.isdigit()), None)
    if pid_line is None:
        raise ServerError(
            f"cannot start the local server: it printed {lines[0][:200]!r}",
            hint=f"see {files.server_log}",
        )
    pid = int(pid_line)
    url = next((line for line in lines if line != pid_line), None)
    if url is not None and url.split()[0] == _BUSY:
        # A server started by a command that died before it listened has the home: it
        # writes `server.json` once it listens.
        return _wait_for_other(files, url.partition(" ")[2], deadline, timeout)
    if url is not None:
        info = read_local_server(home)
        return info if info is not None and info.pid == pid else LocalServer(url, pid)
    if time.monotonic() < deadline:  # its output closed: it exited
        raise ServerError(
            f"the local server exited at start: {_log_tail(files, logged)}",
            hint=f"see {files.server_log}",
        )
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    raise ServerError(
        f"the local server did not start within {timeout:.0f}s",
        hint=f"see {files.server_log}",
    )


def _wait_for_other(files: ServerFiles, pid: str, deadline: float, timeout: float) -> LocalServer:
    while time.monotonic() < deadline:
        found = _live(files)
        if found is not None:
            return found
        time.sleep(_POLL)
    raise ServerError(
        f"another local server (pid {pid or '?'}) is starting on this home and did not"
        f" listen within {timeout:.0f}s",
        hint=f"see {files.server_log}; `dstack server stop` stops it",
    )


def _read_lines(fd: int, count: int, deadline: float) -> list[str]:
    """Up to `count` whole lines from `fd`, fewer when it reaches its end or `deadline`
    (`time.monotonic()`) passes first."""
    data = b""
    while data.count(b"\n") < count:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return [line.decode(errors="replace") for line in data.split(b"\n")[:-1][:count]]


# How a `DstackError` raised at start ends its traceback in the log: its message.
_ERROR_LINE = re.compile(r"dstack\.errors\.\w+: (.+)")


def _log_tail(files: ServerFiles, offset: int) -> str:
    """Why a server that exited at start failed, from what it wrote to its log after
    `offset`: the message of a dstack error (a bad database URL, a busy port), else the
    log's last line."""
    try:
        with files.server_log.open("rb") as log:
            log.seek(offset)
            lines = log.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    for line in reversed(lines):
        if found := _ERROR_LINE.fullmatch(line):
            return found.group(1)
    return lines[-1] if lines else "no log"


def _log_size(files: ServerFiles) -> int:
    try:
        return files.server_log.stat().st_size
    except OSError:
        return 0
