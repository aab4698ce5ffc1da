"""The `dstack` program's start: short commands run as forks of a warm command server.

Most of a short command is Python importing the CLI: click, pydantic building the models,
YAML and the planner are about 170 ms of a 240 ms `dstack run`, before its first request. So
the first such command imports them as usual and, as it exits, starts a command server in
the background (as Mercurial's chg does for hg): a process that imports them once and waits
on a Unix socket. A later command sends it its arguments, environment, working directory,
umask, sys.path and its stdin, stdout and stderr (the file descriptors themselves); the
server forks, and the fork becomes the command: it runs `dstack.cli.main.entry` as a fresh
process would, and its exit status comes back. The signals the command gets (Ctrl+C,
SIGTERM, SIGHUP, Ctrl+Z and `fg`) go on to the fork's process group; a command killed
outright (SIGKILL) takes its fork with it.

A fork must not see anything a fresh process would not:
- one server per interpreter, `sys.path`, interpreter flags, `PYTHON*` and locale variables,
  namespaces, cgroup, capabilities and resource limits (`_description`): a command started
  elsewhere (another virtualenv, `ip netns exec`, a lower `ulimit`) gets another server;
- the server reads nothing of the environment or the working directory; it imports modules
  and nothing else, so no cache of a command's settings exists before the fork;
- it leaves when a dstack module it imported, or a directory of `sys.path`, changes (an
  upgrade, an edit): the next command runs in full and starts a new one;
- it answers its own user only (SO_PEERCRED) on a socket in a directory only that user can
  enter, and leaves after `DSTACK_CLI_SERVER_IDLE_TIMEOUT` seconds without a command (30
  minutes; its process holds about 37 MB).

Only commands that prompt for nothing hidden are served (a fork has no controlling
terminal, so `getpass` could not turn echo off). `DSTACK_CLI_SERVER=0` runs every command in
full. This module imports only the standard library's small modules (socket and json are the
largest, about 3 ms together): it runs before every command.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import io
import json
import os
import resource
import signal
import socket
import stat
import struct
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from typing import Any, NoReturn

SERVED = frozenset(
    {"run", "rerun", "ps", "logs", "attach", "plan", "workflows", "stop", "ls", "tags"}
)
"""Commands a fork runs: none of them asks for a secret at a prompt."""

PRELOAD = (
    "dstack.cli.main",
    "dstack.cli.context",
    "dstack.cli.plan",
    "dstack.cli.upload",
    "dstack.cli.follow",
    "dstack.cli.render",
    "dstack.api.submit",
    "dstack.api.client",
    "dstack.repo.git",
    "dstack.server.local",
)
"""What the server imports besides the served commands' own modules: the run path's
lazy imports (what `dstack run` of the local server needs before its first request)."""

FORWARDED = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")
REQUEST_LIMIT = 4 << 20  # bytes: argv and environment
FAILED_BACKOFF = 600.0  # seconds a server that could not start is not started again
REQUEST_SECONDS = 10.0  # for a caller's whole request, or it is dropped
REQUEST_KEYS = frozenset({"description", "argv", "path", "cwd", "env", "umask", "ignored", "std"})


def entry() -> None:
    """`dstack`: through the command server when it can serve the command, else in full
    (and then start one for the next command)."""
    argv = sys.argv[1:]
    idle = _idle_timeout() if _servable(argv) else None
    description = _description() if idle is not None else None
    sock_path = _socket_path(description) if description is not None else None
    if sock_path is not None and description is not None:
        code = _through_server(sock_path, description, argv)
        if code is not None:
            sys.exit(code)
    # the CLI: ~170 ms of imports that a served command skips
    from dstack.cli.main import entry as run_in_full

    try:
        run_in_full()
    finally:
        if sock_path is not None and idle is not None:
            _start_server(sock_path, idle)


# --- the command's side ------------------------------------------------------------------


def _servable(argv: list[str]) -> bool:
    return (
        bool(argv)
        and argv[0] in SERVED
        and hasattr(socket, "SO_PEERCRED")
        and hasattr(socket, "send_fds")
        and all(_is_open(fd) for fd in (0, 1, 2))
        and all(s is not None for s in (sys.stdin, sys.stdout, sys.stderr))
    )


def _idle_timeout() -> float | None:
    """`DSTACK_CLI_SERVER_IDLE_TIMEOUT`; None when `DSTACK_CLI_SERVER=0`. A value that is
    not valid stops the command, as every setting's does."""
    # settings: a served command needs it, a command that is not served does not
    from dstack.errors import ConfigError
    from dstack.settings import cli_server

    try:
        return cli_server(os.environ)
    except ConfigError as exc:
        print(f"Error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"Hint: {exc.hint}", file=sys.stderr)
        sys.exit(exc.exit_code)


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _socket_dir() -> str | None:
    """`$XDG_RUNTIME_DIR/dstack-cli-UID` (else under /tmp): made 0700, refused when it is
    anyone else's, a link, or open to others (as tmux checks its socket directory)."""
    base = os.environ.get("XDG_RUNTIME_DIR") or "/tmp"
    path = os.path.join(base, f"dstack-cli-{os.getuid()}")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return None
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        return None
    return path


def _socket_path(description: str) -> str | None:
    """The socket of the server for `description` (its checksum names it); None when there
    is no private directory for it."""
    directory = _socket_dir()
    if directory is None:
        return None
    key = zlib.crc32(description.encode(errors="surrogateescape"))
    return os.path.join(directory, f"{key:08x}.sock")


@contextlib.contextmanager
def _address(path: str) -> Iterator[str]:
    """An address for the socket at `path` that fits `sun_path` (108 bytes): `path` itself,
    or the same file through `/proc/self/fd/N/` of an open descriptor of its folder (Linux
    follows that link for bind and connect alike), for a long `XDG_RUNTIME_DIR`."""
    if len(path.encode()) < 100:
        yield path
        return
    folder = os.open(os.path.dirname(path), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{folder}/{os.path.basename(path)}"
    finally:
        os.close(folder)


def _description(paths: list[str] | None = None) -> str:
    """Everything of this process a fork of the server must have the same: its server is
    the one started with these (the socket's name is their checksum, and the server
    compares them whole)."""
    parts = [
        sys.executable,
        sys.version,
        repr(sys.flags),
        repr(sys.warnoptions),
        repr(getattr(sys, "_xoptions", {})),
        # [0] is the script's folder (or the working directory, with -m)
        *(sys.path if paths is None else paths)[1:],
        # the interpreter's settings, and the locale it chose its default encoding by
        *sorted(
            f"{k}={v}"
            for k, v in os.environ.items()
            if k.startswith(("PYTHON", "LC_")) or k == "LANG"
        ),
        repr(os.getgroups()),
        str(os.getgid()),
    ]
    for name in ("ns/net", "ns/mnt", "ns/pid", "ns/user", "ns/uts", "ns/ipc", "root"):
        try:
            parts.append(os.readlink(f"/proc/self/{name}"))
        except OSError:
            parts.append("-")
    for name in ("cgroup", "status"):
        try:
            with open(f"/proc/self/{name}", encoding="utf-8", errors="replace") as file:
                text = file.read()
        except OSError:
            text = "-"
        if name == "status":
            keep = ("Cap", "NoNewPrivs", "Seccomp")
            text = "\n".join(line for line in text.splitlines() if line.startswith(keep))
        parts.append(text)

    for name in sorted(n for n in dir(resource) if n.startswith("RLIMIT_")):
        parts.append(f"{name}={resource.getrlimit(getattr(resource, name))}")
    return "\0".join(parts)


def _std_spec(stream: Any) -> list[Any]:
    return [
        stream.encoding,
        stream.errors,
        stream.line_buffering,
        getattr(stream, "write_through", False),
    ]


def _through_server(sock_path: str, description: str, argv: list[str]) -> int | None:
    """The command's exit status, run by a fork of the server; None when no server took it
    (none is running, or it refused): the command then runs here. Once a fork has taken it,
    it is never run twice."""
    forwardable = [getattr(signal, name) for name in FORWARDED]
    # what this process ignores (inherited, as a background job ignores Ctrl+C), its fork does
    ignored = [int(sig) for sig in _catchable() if signal.getsignal(sig) == signal.SIG_IGN]
    umask = os.umask(0o022)
    os.umask(umask)
    try:
        cwd = os.getcwd()
    except OSError:  # removed: the command, run here, says so its own way
        return None
    request = json.dumps(
        {
            "description": description,
            "argv": [sys.argv[0], *argv],
            "path": sys.path,
            "cwd": cwd,
            "env": dict(os.environ),
            "umask": umask,
            "ignored": ignored,
            "std": [_std_spec(s) for s in (sys.stdin, sys.stdout, sys.stderr)],
        },
    ).encode()  # ASCII: an undecodable byte (a surrogate escape) travels as \udcXX
    if len(request) > REQUEST_LIMIT:
        return None
    pgid: list[int] = []
    forwarded: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        # Before the fork has answered, a signal waits for it (or for the command to run
        # here, should no fork take it).
        forwarded.append(signum)
        if pgid:
            with contextlib.suppress(OSError):
                os.killpg(pgid[0], signum)

    def suspend(_signum: int, _frame: object) -> None:
        # Ctrl+Z: the fork stops, then this process as the shell expects; `fg` continues
        # this process here, and then the fork.
        if pgid:
            with contextlib.suppress(OSError):
                os.killpg(pgid[0], signal.SIGTSTP)
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTSTP)
        signal.signal(signal.SIGTSTP, suspend)
        if pgid:
            with contextlib.suppress(OSError):
                os.killpg(pgid[0], signal.SIGCONT)

    handled = [sig for sig in (*forwardable, signal.SIGTSTP) if int(sig) not in ignored]
    previous = {
        sig: signal.signal(sig, suspend if sig == signal.SIGTSTP else forward) for sig in handled
    }
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        started = _start_fork(sock, sock_path, request)
        if started is None:  # no fork took it: the command runs here, as it would have
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for signum in forwarded:
                if signum == signal.SIGINT:
                    sys.exit(130)
                _die_of(signum)
            return None
        replies, pid = started
        pgid.append(pid)
        for signum in forwarded:  # those that came before the fork's answer
            with contextlib.suppress(OSError):
                os.killpg(pid, signum)
        try:
            last = replies.readline(4096)
        except OSError:
            last = b""
        try:
            ended = json.loads(last) if last else {}
        except ValueError:
            ended = {}
        if isinstance(ended, dict) and isinstance(ended.get("exit"), int):
            return int(ended["exit"])
        # The fork ended without a status: killed by a signal. End as it did.
        if forwarded:
            _die_of(forwarded[-1])
        print("dstack: the command ended without an exit status", file=sys.stderr)
        return 1
    finally:
        sock.close()


def _start_fork(sock: socket.socket, sock_path: str, request: bytes) -> tuple[Any, int] | None:
    """Hand the command to the server: (its replies, the fork's pid), or None when no
    server took it (none listens, it refused, or it left)."""
    try:
        with _address(sock_path) as address:
            sock.connect(address)
        payload = len(request).to_bytes(4, "big") + request
        sent = socket.send_fds(sock, [payload], [0, 1, 2])
        sock.sendall(payload[sent:])
        replies = sock.makefile("rb")
        first = replies.readline(4096)
        started = json.loads(first) if first else {}
    except (OSError, ValueError):
        return None
    if not isinstance(started, dict) or not isinstance(started.get("pid"), int):
        return None
    return replies, int(started["pid"])


def _catchable() -> list[signal.Signals]:
    return [
        sig
        for sig in signal.valid_signals()
        if isinstance(sig, signal.Signals) and sig not in (signal.SIGKILL, signal.SIGSTOP)
    ]


def _die_of(signum: int) -> NoReturn:
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    os._exit(128 + signum)  # a signal whose default is not to end the process


def _start_server(sock_path: str, idle: float) -> None:
    """Start the command server for the next command, unless one runs or is starting (it
    holds the lock) or one failed to start lately. Detached, with nothing of ours open."""
    stem = sock_path[: -len(".sock")]
    try:
        failed = os.stat(stem + ".failed")
    except OSError:
        pass
    else:
        if time.time() - failed.st_mtime < FAILED_BACKOFF:
            return
    # pathlib: imported anyway by the command that just ran in full
    from pathlib import Path

    from dstack.pidlock import lock_holder

    if lock_holder(Path(stem + ".lock")) is not None:
        return  # a server runs or starts
    # subprocess: ~3 ms a served command does not need
    import subprocess

    argv = [
        sys.executable,
        *subprocess._args_from_interpreter_flags(),  # type: ignore[attr-defined]
        "-c",
        "from dstack.cli.warm import serve; serve()",
        sock_path,
        json.dumps(sys.path),
        repr(idle),
    ]
    with contextlib.suppress(OSError):
        os.posix_spawn(
            sys.executable,
            argv,
            os.environ,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
            ],
            setsid=True,
        )


def stop_servers(directory: str | None = None) -> list[int]:
    """Stop the command servers of this user (of `directory`, else the usual one); their
    pids. A command being served goes on: it is a process of its own."""
    stopped = []
    for pid in server_pids(directory):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            stopped.append(pid)
    return stopped


def server_pids(directory: str | None = None) -> list[int]:
    """The pids of the command servers of this user (of `directory`, else the usual one):
    the holders of their locks (one still starting may not hold its lock yet)."""
    # pathlib: only here, not at every command's start
    from pathlib import Path

    from dstack.pidlock import lock_holder

    found = directory or _socket_dir()
    pids = [lock_holder(lock) for lock in sorted(Path(found).glob("*.lock"))] if found else []
    return [pid for pid in pids if pid]


# --- the server's side -------------------------------------------------------------------


def serve() -> None:
    """The command server: `python -c "from dstack.cli.warm import serve; serve()" SOCKET
    SYS_PATH IDLE_SECONDS`. Returns only in a fork, which then runs the command."""
    sock_path, paths, idle = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3])
    # Not [0]: the starting command's script folder, or with `python -m` its working
    # directory, whose files must not stand in for modules every later command uses.
    sys.path[:] = paths[1:]
    os.chdir("/")
    served = _Server(sock_path, idle, paths).run()
    if served is not None:
        _become(*served)


class _Server:
    def __init__(self, sock_path: str, idle: float, paths: list[str]) -> None:
        self.paths = paths
        self.sock_path = sock_path
        self.stem = sock_path[: -len(".sock")]
        self.idle = idle if idle > 0 else None

    def run(self) -> tuple[socket.socket, list[int], dict[str, Any]] | None:
        # pathlib: ~7 ms of every served command's start; the server's side only
        from pathlib import Path

        from dstack.pidlock import PidLock

        lock = PidLock(Path(self.stem + ".lock"))
        if not lock.try_acquire():
            return None  # another server runs or starts
        self.description = _description(self.paths)
        try:
            if _socket_path(self.description) != self.sock_path:
                raise RuntimeError("started by a process unlike this one: it cannot serve it")
            self._preload()
            if threading.active_count() != 1:  # a fork would copy one thread, not its locks
                raise RuntimeError("a module started a thread")
        except Exception:
            with open(self.stem + ".failed", "w"):
                pass
            return None
        self.fingerprint = _fingerprint()
        gc.collect()
        gc.freeze()  # the forks share these pages instead of the collector touching them
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # forks are reaped by the kernel
        server_pid = os.getpid()

        def stop(_signum: int, _frame: object) -> None:
            if os.getpid() == server_pid:  # not a fork before it set its own handlers
                self._leave()
            os._exit(0)

        signal.signal(signal.SIGTERM, stop)  # `stop_servers`: no socket is left behind
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.sock_path)
        old_umask = os.umask(0o177)
        with _address(self.sock_path) as address:
            listener.bind(address)
        os.umask(old_umask)
        self.inode = os.stat(self.sock_path).st_ino
        listener.listen(64)
        listener.settimeout(self.idle)
        while True:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                break  # idle
            taken = self._take(conn)
            if taken is None:
                conn.close()
                continue
            if isinstance(taken, str):  # stale
                break
            fds, request = taken
            pid = os.fork()
            if pid == 0:
                listener.close()
                lock.release()  # the fork's copy: the server still holds the lock
                return conn, fds, request
            conn.close()
            for fd in fds:
                os.close(fd)
        self._leave()
        return None

    def _preload(self) -> None:
        # the CLI's modules: what the server is for (about 170 ms, once)
        from dstack.cli import main

        main._skip_unused_imports()
        for name in sorted(SERVED):
            importlib.import_module(main.COMMANDS[name][0].split(":")[0])
        for name in PRELOAD:
            importlib.import_module(name)

    def _take(self, conn: socket.socket) -> tuple[list[int], dict[str, Any]] | str | None:
        """The request's (fds, request); "stale" when this server must leave; None to drop
        the connection (not its user's, malformed)."""
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        if uid != os.getuid():
            return None
        # The whole request within REQUEST_SECONDS: a caller trickling bytes holds this
        # (single-threaded) server no longer than that.
        deadline = time.monotonic() + REQUEST_SECONDS
        conn.settimeout(REQUEST_SECONDS)
        fds: list[int] = []
        try:
            data, fds, _flags, _addr = socket.recv_fds(conn, 65536, 3)
            body = bytearray(data)
            while 0 < len(body) < 4:
                body += _more(conn, 4 - len(body), deadline)
            size = int.from_bytes(body[:4], "big") if len(body) >= 4 else -1
            if not 0 < size <= REQUEST_LIMIT or len(fds) != 3:
                raise ValueError("malformed")
            del body[:4]
            while len(body) < size:
                body += _more(conn, min(1 << 20, size - len(body)), deadline)
            request = json.loads(bytes(body))
            if not (
                isinstance(request, dict) and set(request) == REQUEST_KEYS and _well_formed(request)
            ):
                raise ValueError("malformed")
        except (OSError, ValueError):
            for fd in fds:
                os.close(fd)
            return None
        if _fingerprint() != self.fingerprint:
            for fd in fds:
                os.close(fd)
            return "stale"  # the connection closes unanswered: the command runs in full
        if request.get("description") != self.description:
            for fd in fds:
                os.close(fd)
            return None
        conn.settimeout(None)
        return fds, request

    def _leave(self) -> None:
        try:
            if os.stat(self.sock_path).st_ino == self.inode:
                os.unlink(self.sock_path)
        except OSError:
            pass


def _more(conn: socket.socket, size: int, deadline: float) -> bytes:
    """Up to `size` more bytes of a request; a request that ends early (or late) is
    malformed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise ValueError("the request took too long")
    conn.settimeout(left)
    chunk = conn.recv(size)
    if not chunk:
        raise ValueError("the request ended early")
    return chunk


def _well_formed(request: dict[str, Any]) -> bool:
    """Whether every value of a request has the type the fork takes it as: any process of
    this user may connect, and a wrong type must be dropped here, not become a traceback in
    a fork writing to the caller's terminal."""
    env, std, umask = request["env"], request["std"], request["umask"]
    return (
        _strings(request["argv"])
        and bool(request["argv"])
        and _strings(request["path"])
        and isinstance(request["cwd"], str)
        and isinstance(env, dict)
        and _strings([*env, *env.values()])
        and type(umask) is int
        and 0 <= umask <= 0o777
        and isinstance(request["ignored"], list)
        and all(type(sig) is int for sig in request["ignored"])
        and isinstance(std, list)
        and len(std) == 3
        and all(_stream_spec(spec) for spec in std)
    )


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _stream_spec(spec: Any) -> bool:
    """[encoding, errors, line_buffering, write_through], as `_std_spec` sends them."""
    return (
        isinstance(spec, list)
        and len(spec) == 4
        and _strings(spec[:2])
        and all(type(flag) is bool for flag in spec[2:])
    )


def _fingerprint() -> list[tuple[str, int, int]]:
    """(file, mtime, size) of every dstack module imported and every `sys.path` entry: a
    change means an upgrade or an edit, which imported modules would not see."""
    # dstack: imported by the time a server checks
    import dstack

    root = os.path.dirname(dstack.__file__ or "")
    files = sorted(
        {
            file
            for module in list(sys.modules.values())
            if isinstance(file := getattr(module, "__file__", None), str) and file.startswith(root)
        }
        | {p for p in sys.path if p}
    )
    found = []
    for path in files:
        try:
            st = os.stat(path)
        except OSError:
            found.append((path, -1, -1))
        else:
            found.append((path, st.st_mtime_ns, st.st_size))
    return found


def _become(conn: socket.socket, fds: list[int], request: dict[str, Any]) -> None:
    """In the fork: take the command's process group, streams, directory and environment,
    run it, and report its exit status."""
    os.setpgid(0, 0)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for sig in _catchable():  # as the command's own process has them, not the server's
        if int(sig) in request["ignored"]:
            handler: Any = signal.SIG_IGN
        elif sig == signal.SIGINT:
            handler = signal.default_int_handler
        else:
            handler = signal.SIG_DFL
        with contextlib.suppress(OSError, ValueError):
            signal.signal(sig, handler)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.environ.clear()
    os.environ.update(request["env"])
    time.tzset()
    os.umask(request["umask"])
    sys.argv = list(request["argv"])
    sys.path[:] = request["path"]
    streams = []
    for fd, (encoding, errors, line_buffering, write_through) in enumerate(request["std"]):
        raw = io.FileIO(fd, "r" if fd == 0 else "w", closefd=False)
        buffered: Any = io.BufferedReader(raw) if fd == 0 else io.BufferedWriter(raw)
        streams.append(
            io.TextIOWrapper(
                buffered,
                encoding=encoding,
                errors=errors,
                line_buffering=line_buffering,
                write_through=write_through,
            )
        )
    sys.stdin, sys.stdout, sys.stderr = streams
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = streams  # type: ignore[misc]
    done = threading.Event()
    status = [1]

    def report() -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        done.set()
        with contextlib.suppress(OSError):
            conn.sendall(json.dumps({"exit": status[0] & 0xFF}).encode() + b"\n")

    def watch() -> None:
        # The command's process is gone without a word (SIGKILL): so is this one.
        while True:
            try:
                if not conn.recv(1):
                    break
            except OSError:
                break
        if not done.is_set():
            os.kill(os.getpid(), signal.SIGKILL)

    try:
        conn.sendall(json.dumps({"pid": os.getpid()}).encode() + b"\n")
    except OSError:
        os._exit(1)  # the command is gone before it started
    threading.Thread(target=watch, name="dstack-cli-watch", daemon=True).start()
    atexit.register(report)
    try:
        os.chdir(request["cwd"])
    except OSError as exc:
        print(f"Error: cannot enter the working directory: {exc}", file=sys.stderr)
        sys.exit(1)
    # the CLI itself: imported before the fork, so free here
    from dstack.cli.main import entry as run_in_full

    try:
        run_in_full()
    except SystemExit as exc:
        status[0] = _status_of(exc.code)
        raise
    except KeyboardInterrupt:
        status[0] = 130
        raise
    except BaseException:
        status[0] = 1
        raise
    status[0] = 0


def _status_of(code: object) -> int:
    """The exit status Python gives `sys.exit(code)`."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    return 1
