"""The command server (`dstack.cli.warm`): after a first command, short commands run as
forks of a process that has the CLI imported, and a user sees exactly what a fresh process
would show: output, exit status, signals, the terminal, their own directory and settings."""

from __future__ import annotations

import json
import os
import pty
import resource
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from tests.e2e.conftest import Env, Result, _stop_server, make_env
from tests.e2e.remote_helpers import wait_until

from dstack.cli.warm import REQUEST_SECONDS, stop_servers
from dstack.pidlock import lock_holder

WORKFLOWS = """
workflows:
  - name: fail
    provider: bash
    commands: [echo to-stdout, echo to-stderr >&2, exit 3]
  - name: slow
    provider: bash
    commands: [echo started, sleep 60]
  - name: pause
    provider: bash
    commands: [echo before, sleep 3, echo after]
"""


@pytest.fixture
def user(tmp_path: Path) -> Iterator[Env]:
    e = make_env(tmp_path, "process")
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    e.extra_env["XDG_RUNTIME_DIR"] = str(run_dir)
    e.workflows(WORKFLOWS)
    try:
        yield e
    finally:
        stop_servers(str(socket_dir(e)))
        for server in servers(e):  # one still starting holds no lock yet
            server.kill()
        _stop_server(e.home)


def socket_dir(e: Env) -> Path:
    return Path(e.extra_env["XDG_RUNTIME_DIR"]) / f"dstack-cli-{os.getuid()}"


def servers(e: Env) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "ppid"]):
        line = proc.info["cmdline"] or []
        if (
            any("dstack.cli.warm import serve" in part for part in line)
            and any(part.startswith(str(socket_dir(e))) for part in line)
            and proc.info["ppid"] in (0, 1)  # the server, not a fork running a command
            and proc.status() != psutil.STATUS_ZOMBIE
        ):
            found.append(proc)
    return found


def the_server(e: Env) -> psutil.Process:
    """The one command server of this user, once it holds its lock and listens."""

    def listening() -> bool:
        found = servers(e)
        locks = list(socket_dir(e).glob("*.lock"))
        return (
            len(found) == 1
            and len(locks) == 1
            and lock_holder(locks[0]) == found[0].pid
            and locks[0].with_suffix(".sock").exists()
        )

    wait_until(listening, timeout=60, what="the command server")
    return servers(e)[0]


def gone(proc: psutil.Process) -> bool:
    """Exited (a zombie its parent has not reaped yet counts)."""
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def forks(server: psutil.Process) -> list[psutil.Process]:
    return [p for p in server.children() if not gone(p)]


def submitted(e: Env, workflow: str, prepare: Callable[[], None]) -> subprocess.Popen[str]:
    """`dstack run WORKFLOW` started with `prepare` (a signal disposition), once the run is
    submitted: by then its fork has the command."""
    proc = e.spawn("run", workflow, prepare=prepare)
    assert proc.stderr is not None
    while "submitted" not in proc.stderr.readline():
        assert proc.poll() is None, proc.communicate()
    return proc


def finish(proc: subprocess.Popen[str]) -> Result:
    out, err = proc.communicate(timeout=120)
    return Result(proc.returncode, out, err)


def newest_run(e: Env) -> str:
    wait_until(lambda: e.dstack("ps", "-a", "--json").out.strip() not in ("", "[]"), what="a run")
    return str(json.loads(e.dstack("ps", "-a", "--json").out)[0]["name"])


def in_full(e: Env) -> Env:
    return Env(e.repo, e.home, e.executor, {**e.extra_env, "DSTACK_CLI_SERVER": "0"})


def test_a_served_command_shows_what_the_full_one_shows_and_exits_with_its_status(
    user: Env,
) -> None:
    first = user.dstack("run", "fail")  # in full; starts the server as it exits
    server = the_server(user)
    second = user.dstack("run", "fail")
    full = in_full(user).dstack("run", "fail")

    for result in (first, second, full):
        assert result.code == 3, result
        assert "to-stdout" in result.out, result
        assert "to-stderr" in result.err, result
        assert "failed — exited with code 3" in result.err, result
    assert the_server(user).pid == server.pid  # the same server served it


def test_a_served_command_runs_in_a_fork_of_the_server(user: Env) -> None:
    user.dstack("ps")
    server = the_server(user)
    proc = user.spawn("run", "slow")
    wait_until(lambda: len(forks(server)) == 1, what="the command's fork")
    fork = forks(server)[0]
    assert fork.cmdline() == server.cmdline()  # a fork: no program started
    assert os.getpgid(fork.pid) == fork.pid  # its own group, for the signals

    user.wait_for(newest_run(user), {"running"})
    proc.send_signal(signal.SIGINT)  # Ctrl+C: as in full, it detaches
    result = finish(proc)

    assert result.code == 0, result
    assert "Detached. The run keeps going" in result.err, result
    wait_until(lambda: not forks(server), what="the fork to end")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_command_ended_by_a_signal_ends_its_fork_and_reports_the_signal(
    user: Env, sig: signal.Signals
) -> None:
    user.dstack("ps")
    server = the_server(user)
    proc = user.spawn("run", "slow")
    wait_until(lambda: len(forks(server)) == 1, what="the command's fork")

    proc.send_signal(sig)
    finish(proc)

    assert proc.returncode == -sig  # as the shell sees a process killed by it
    wait_until(lambda: not forks(server), what="the fork to end")


def test_each_command_has_its_own_directory_and_environment(user: Env, tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    other = make_env(tmp_path / "other", "process")
    other.extra_env.update(user.extra_env)
    other.workflows(
        """
        workflows:
          - name: elsewhere
            provider: bash
            commands: [echo elsewhere]
        """
    )
    user.dstack("workflows")
    the_server(user)
    try:
        here = user.dstack("workflows")
        there = other.dstack("workflows")
        ran_there = other.dstack("run", "elsewhere")  # its DSTACK_HOME: its own server
        runs_here = user.dstack("ps", "-a")
        runs_there = other.dstack("ps", "-a")
    finally:
        _stop_server(other.home)

    assert "fail" in here.out, here
    assert "elsewhere" not in here.out, here
    assert "elsewhere" in there.out, there
    assert "fail" not in there.out, there
    assert ran_there.code == 0, ran_there
    assert "elsewhere" in ran_there.out, ran_there
    assert "elsewhere" in runs_there.out, runs_there
    assert "elsewhere" not in runs_here.out, runs_here


def on_terminal(e: Env, *args: str, answer: bytes | None = None) -> tuple[int, bytes]:
    """Run `dstack ARGS` on a terminal (a pty); answer its question, if any, with `answer`.
    (exit status, everything the terminal showed)."""
    main, secondary = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dstack", *args],
        cwd=e.repo,
        env={**e.environ(), "TERM": "xterm", "COLUMNS": "120"},
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
    )
    os.close(secondary)
    shown = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # EIO: the terminal's other end is closed
            break
        if not chunk:
            break
        shown += chunk
        if answer is not None and shown.rstrip().endswith(b"]:"):
            os.write(main, answer)
            answer = None
    proc.wait(60)
    os.close(main)
    return proc.returncode, shown


def test_on_a_terminal_the_output_is_the_full_commands_byte_for_byte(user: Env) -> None:
    user.dstack("run", "fail")
    the_server(user)

    served, full = on_terminal(user, "ps", "-a"), on_terminal(in_full(user), "ps", "-a")

    assert served[0] == 0
    assert b"\x1b[" in served[1]  # colours: the fork saw a terminal
    assert served == full


def test_a_question_on_the_terminal_is_answered_through_the_fork(user: Env) -> None:
    user.extra_env["DSTACK_UPLOAD_CONFIRM_SIZE"] = "1KB"
    user.write("big.bin", "x" * 5000)  # untracked: uploaded with the run, above the size
    user.dstack("run", "fail")  # no terminal, no question; uploads the commit, once
    server = the_server(user)
    runs = user.dstack("ps", "-a").out.count("fail")

    user.write("big.bin", "y" * 5000)  # new changes: asked again
    served = on_terminal(user, "run", "fail", answer=b"n\n")
    user.write("big.bin", "z" * 5000)
    full = on_terminal(in_full(user), "run", "fail", answer=b"n\n")

    assert served == full
    assert served[0] == 1
    assert b"[y/N]: n" in served[1]
    assert b"nothing was uploaded or submitted" in served[1]
    assert user.dstack("ps", "-a").out.count("fail") == runs  # no run was made
    assert the_server(user).pid == server.pid


def test_a_change_to_what_the_server_imported_gets_a_new_server(user: Env, tmp_path: Path) -> None:
    extra = tmp_path / "extra"
    extra.mkdir()
    user.extra_env["PYTHONPATH"] = os.pathsep.join(
        [str(extra), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    user.dstack("ps")
    old = the_server(user)

    (extra / "new_module.py").write_text("")  # an install into a directory of sys.path
    result = user.dstack("run", "fail")

    assert result.code == 3, result
    assert "to-stdout" in result.out, result
    wait_until(lambda: gone(old), what="the stale server to leave")
    assert the_server(user).pid != old.pid


def test_a_lower_resource_limit_gets_a_server_of_its_own(user: Env) -> None:
    user.dstack("ps")
    first = the_server(user)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 512), hard))

    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-m", "dstack", "run", "fail"],
            cwd=user.repo,
            env=user.environ(),
            capture_output=True,
            preexec_fn=lower,
            check=False,
        )
        assert done.returncode == 3, done
    wait_until(lambda: len(servers(user)) == 2, what="a second server")
    limited = next(s for s in servers(user) if s.pid != first.pid)
    assert limited.rlimit(psutil.RLIMIT_NOFILE)[0] == min(soft, 512)


@pytest.mark.parametrize("setting", ["off", "open socket directory"])
def test_no_server_is_started_when_it_is_off_or_its_directory_is_not_private(
    user: Env, setting: str
) -> None:
    if setting == "off":
        user.extra_env["DSTACK_CLI_SERVER"] = "0"
    else:
        socket_dir(user).mkdir(mode=0o700)
        socket_dir(user).chmod(0o777)

    for _ in range(2):
        assert user.dstack("run", "fail").code == 3

    files = list(socket_dir(user).glob("*")) if socket_dir(user).exists() else []
    assert files == []
    assert servers(user) == []


def test_stopped_servers_leave_and_the_next_command_starts_one(user: Env) -> None:
    user.dstack("ps")
    server = the_server(user)

    assert stop_servers(str(socket_dir(user))) == [server.pid]
    wait_until(lambda: gone(server), what="the server to stop")
    assert not list(socket_dir(user).glob("*.sock"))  # it took its socket away
    result = user.dstack("run", "fail")

    assert result.code == 3, result
    assert the_server(user).pid != server.pid


def test_ctrl_z_stops_the_command_and_its_fork_and_fg_continues_both(user: Env) -> None:
    user.dstack("ps")
    server = the_server(user)

    def as_a_shell_starts_it() -> None:
        # A shell with job control: Ctrl+C and Ctrl+Z at their defaults, and the job in a
        # process group of its own (the kernel does not stop one in an orphaned group, as
        # this test's may be when CI starts it in the background).
        for sig in (signal.SIGINT, signal.SIGTSTP, signal.SIGCONT):
            signal.signal(sig, signal.SIG_DFL)
        os.setpgid(0, 0)

    proc = submitted(user, "pause", as_a_shell_starts_it)
    try:
        fork, command = forks(server)[0], psutil.Process(proc.pid)

        proc.send_signal(signal.SIGTSTP)
        wait_until(lambda: command.status() == psutil.STATUS_STOPPED, what="it to stop")
        wait_until(lambda: fork.status() == psutil.STATUS_STOPPED, what="the fork to stop")
        proc.send_signal(signal.SIGCONT)
        result = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        if proc.stdout is not None and not proc.stdout.closed:
            proc.communicate()

    assert result.code == 0, result
    assert "after" in result.out, result


def test_a_signal_the_command_ignores_its_fork_ignores_too(user: Env) -> None:
    user.dstack("ps")
    the_server(user)

    def as_a_background_job() -> None:  # a non-interactive shell's `cmd &` ignores Ctrl+C
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    proc = submitted(user, "pause", as_a_background_job)
    proc.send_signal(signal.SIGINT)
    result = finish(proc)

    assert result.code == 0, result
    assert "after" in result.out, result  # not detached: the run was followed to its end
    assert "Detached" not in result.err, result


def test_an_invalid_idle_timeout_stops_the_command_with_one_line(user: Env) -> None:
    user.extra_env["DSTACK_CLI_SERVER_IDLE_TIMEOUT"] = "soon"

    result = user.dstack("ps")

    assert result.code == 1, result
    assert result.err.splitlines()[0] == "Error: invalid DSTACK_CLI_SERVER_IDLE_TIMEOUT 'soon'"


def test_a_socket_path_longer_than_a_socket_address_holds_still_gets_a_server(
    user: Env, tmp_path: Path
) -> None:
    long_dir = tmp_path / ("a-long-runtime-directory-" * 4)
    long_dir.mkdir(mode=0o700)
    user.extra_env["XDG_RUNTIME_DIR"] = str(long_dir)
    assert len(str(socket_dir(user))) > 108  # beyond sun_path, before the socket's name

    first = user.dstack("run", "fail")
    server = the_server(user)
    second = user.dstack("run", "fail")

    assert (first.code, second.code) == (3, 3)
    assert "to-stdout" in second.out, second
    assert the_server(user).pid == server.pid


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"\x00\x00",  # a length cut short, then the end
        (1 << 31).to_bytes(4, "big"),  # a length over the bound
        (20).to_bytes(4, "big") + b"{not json",  # fewer bytes than said, then the end
        (9).to_bytes(4, "big") + b"not json!",  # whole, but not a request
    ],
)
def test_a_broken_request_is_dropped_and_the_server_serves_the_next_command(
    user: Env, request_bytes: bytes
) -> None:
    user.dstack("ps")
    server = the_server(user)
    (sock_path,) = socket_dir(user).glob("*.sock")

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(sock_path))
        socket.send_fds(sock, [request_bytes], [0, 1, 2])
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(100) == b""  # no fork: dropped unanswered
    proc = user.spawn("run", "slow")
    try:
        wait_until(lambda: len(forks(server)) == 1, what="the next command's fork")
    finally:
        proc.send_signal(signal.SIGTERM)
        finish(proc)
    assert the_server(user).pid == server.pid


def test_a_caller_trickling_its_request_is_dropped_at_the_request_deadline(user: Env) -> None:
    user.dstack("ps")
    server = the_server(user)
    (sock_path,) = socket_dir(user).glob("*.sock")

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(sock_path))
        socket.send_fds(sock, [(100).to_bytes(4, "big")], [0, 1, 2])
        dropped = False
        for _ in range(2 * int(REQUEST_SECONDS)):  # a byte every second, twice the deadline
            try:
                sock.send(b" ")
            except (BrokenPipeError, ConnectionResetError):
                dropped = True
                break
            sock.settimeout(1.0)
            try:
                dropped = sock.recv(100) == b""
            except TimeoutError:
                continue
            break
    assert dropped  # before the bytes ran out: each one came well within the deadline
    assert user.dstack("ps").code == 0
    assert the_server(user).pid == server.pid


@pytest.mark.parametrize(
    "wrong",
    [
        {},  # the request as it is: served (so each other case differs only by its value)
        {"argv": 5},
        {"argv": []},
        {"env": {"HOME": 1}},
        {"umask": "022"},
        {"ignored": ["SIGINT"]},
        {"std": [["utf-8", "strict", False, False]]},
    ],
)
def test_a_request_with_a_value_of_the_wrong_type_is_dropped_unforked(
    user: Env, wrong: dict[str, object]
) -> None:
    user.dstack("ps")
    server = the_server(user)
    (sock_path,) = socket_dir(user).glob("*.sock")
    # What a real `dstack` of this user sends, so only the wrong value differs.
    described = subprocess.run(
        [sys.executable, "-c", "from dstack.cli.warm import _description; print(_description())"],
        env=user.environ(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.rstrip("\n")
    std = ["utf-8", "strict", False, False]
    request = {
        "description": described,
        "argv": ["dstack", "ps"],
        "path": sys.path,
        "cwd": str(user.repo),
        "env": user.environ(),
        "umask": 0o022,
        "ignored": [],
        "std": [std, std, std],
    }
    body = json.dumps({**request, **wrong}).encode()
    read, write = os.pipe()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(sock_path))
            socket.send_fds(sock, [len(body).to_bytes(4, "big") + body], [read, write, write])
            sock.settimeout(60)  # kept open for writing: a fork ends when its caller hangs up
            answer = b""
            while b'"exit"' not in answer and (chunk := sock.recv(4096)):
                answer += chunk
        os.set_blocking(read, False)
        try:
            printed = os.read(read, 65536)  # what reached the caller's terminal
        except BlockingIOError:
            printed = b""
    finally:
        os.close(read)
        os.close(write)
    if wrong:
        assert answer == b""  # no fork: dropped unanswered
        assert printed == b""  # nor a traceback on the caller's terminal
    else:  # a fork's pid, then its exit status
        assert b'"pid"' in answer
        assert b'"exit": 0' in answer
    assert user.dstack("ps").code == 0
    assert the_server(user).pid == server.pid
