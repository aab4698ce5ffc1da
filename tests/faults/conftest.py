"""The fault-injection harness: a team on loopback (a `dstack server` process, one
`dstack-runner` process with the process executor, a user's CLI) whose processes a test kills
with SIGKILL at a chosen point of a job, then restarts.

A point is reached by polling what a user or the runner can see (the job's status, its log
spool, its files) or, for phases too short to hit that way, by a pause point of the runner
(`dstack.runner.faults`): the test opens a gate, waits for the runner's marker, kills, closes
the gate. What a test checks afterwards goes through the real CLI (`dstack logs`, `ls`, `cp`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
from tests.e2e.conftest import Env, Result, _stop_server, make_env
from tests.e2e.remote_helpers import (
    ADMIN_TOKEN,
    RunnerProcess,
    TeamServer,
    online_runners,
    wait_until,
)

from dstack.api.client import Client
from dstack.models.run import Run
from dstack.runner.jobuser import default_job_user
from dstack.runner.settings import RunnerSettings
from dstack.server.local import ensure_local_server, read_local_server, stop_local_server
from dstack.settings import RUNNER_FAULT_HOOKS as HOOKS_ENV

STEPS = 8
"""Numbered steps of the job: each pauses, prints `line N`, writes `res/step-N.txt` and
`out/step-N.txt`, prints `wrote N`. The last file comes right before the job exits, so that
only the final sync sees it."""
STEP_PAUSE = 0.3
FINAL_BOUND = 90.0
"""Seconds a run may take to reach a final state after the last restart: a bound on waiting
(a run that never ends would hang the suite), not a measure of speed."""

_NUMBERED = re.compile(r"^(line|wrote) (\d+)$")

WORKFLOWS = f"""
workflows:
  - name: steps
    provider: bash
    deps:
      - tag: base
    commands:
      - cat base1/seed.txt base2/seed.txt
      - mkdir -p out res tmp
      - |
        for i in $(seq 1 {STEPS}); do
          sleep {STEP_PAUSE}
          echo "line $i"
          yes "step $i" | head -c $((1000 * i)) > tmp/part
          cp tmp/part res/step-$i.txt
          mv tmp/part out/step-$i.txt
          echo "wrote $i"
        done
    artifacts:
      - path: out
        mount: true
      - res
"""
ARTIFACTS = ("out", "res")
"""`out` is synced every few seconds while the job runs (`mount`), `res` only at its end: every
run has a final upload with something new in it."""


def step_bytes(n: int) -> bytes:
    """What the job writes to `out/step-N.txt`."""
    unit = f"step {n}\n".encode()
    size = 1000 * n
    return (unit * (size // len(unit) + 1))[:size]


def numbered(text: str) -> list[tuple[str, int]]:
    """The job's numbered lines in `text`, in order."""
    found = []
    for line in text.splitlines():
        match = _NUMBERED.match(line.strip())
        if match:
            found.append((match.group(1), int(match.group(2))))
    return found


@dataclass
class Hooks:
    """The runner's pause points (see `dstack.runner.faults`), seen from the test."""

    folder: Path

    def clear(self) -> None:
        for path in self.folder.iterdir():
            path.unlink()

    def open(self, point: str) -> None:
        (self.folder / f"pause-{point}").touch()

    def release(self) -> None:
        for gate in self.folder.glob("pause-*"):
            gate.unlink()

    def reached(self, point: str) -> str | None:
        """The id of the job paused at `point`, once one is."""
        for marker in self.folder.glob(f"at-{point}-*"):
            return marker.name[len(f"at-{point}-") :]
        return None


@dataclass
class Team:
    """The processes a fault test kills, and the user who looks at the result. Two
    topologies share this face: `RemoteTeam` (`dstack server` + `dstack-runner start`, the
    user with `--remote`) and `LocalTeam` (the CLI's own local server and its runner)."""

    user: Env
    hooks: Hooks
    jobs_dir: Path
    _client: Client | None = None

    # --- the processes (per topology)

    def server_url(self) -> str:
        raise NotImplementedError

    def server_token(self) -> str:
        raise NotImplementedError

    def remote_args(self) -> list[str]:
        raise NotImplementedError

    def kill_runner(self) -> None:
        raise NotImplementedError

    def kill_server(self) -> None:
        raise NotImplementedError

    def revive(self) -> None:
        """Start whichever of the server and the runner is not running, and wait for both."""
        raise NotImplementedError

    def configure(self) -> None:
        """Point the user's CLI at the server (once it runs)."""

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    # --- the user's side

    def dstack(self, *args: str, timeout: float = 60) -> Result:
        return self.user.dstack(*args, *self.remote_args(), timeout=timeout)

    def submit(self) -> str:
        """`dstack run -d --reload steps`; the run's name."""
        result = self.dstack("run", "-d", "--reload", "steps")
        assert result.code == 0, result
        return run_name_in(result.out + result.err)

    def attach(self) -> subprocess.Popen[str]:
        """`dstack run --reload steps`, attached: the CLI a test may kill."""
        return self.user.spawn("run", "--reload", "steps", *self.remote_args())

    def client(self) -> Client:
        url = self.server_url()
        if self._client is None or str(self._client.base_url) != url:
            if self._client is not None:
                self._client.close()
            self._client = Client(url, self.server_token(), timeout=5)
        return self._client

    def run(self, name: str) -> Run | None:
        """The run as the server has it; None while the server does not answer."""
        try:
            return self.client().get_run(name)
        except Exception:
            return None

    def newest_run(self) -> str | None:
        try:
            runs = self.client().list_runs()
        except Exception:
            return None
        return runs[0].name if runs else None

    def wait_final(self, name: str, bound: float = FINAL_BOUND) -> Run:
        deadline = time.monotonic() + bound
        while True:
            run = self.run(name)
            if run is not None and run.status.is_finished():
                return run
            if time.monotonic() > deadline:
                status = run.status if run is not None else "unknown (server down)"
                raise AssertionError(f"run {name} is still {status} after {bound:.0f}s")
            time.sleep(0.2)

    # --- the runner's side

    def spool(self, job_id: str) -> str:
        """The text of the job's log spool on the runner's disk (records cut mid-write
        skipped): what the runner held."""
        path = self.jobs_dir / job_id / "logs" / "spool.jsonl"
        try:
            raw = path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        text = []
        for line in raw.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            text.append(str(record[3]))
        return "".join(text)


@dataclass
class RemoteTeam(Team):
    server: TeamServer = field(kw_only=True)
    runner: RunnerProcess = field(kw_only=True)

    def server_url(self) -> str:
        return self.server.url

    def server_token(self) -> str:
        return ADMIN_TOKEN

    def remote_args(self) -> list[str]:
        return ["--remote"]

    def kill_runner(self) -> None:
        _kill(self.runner.proc, "runner")

    def kill_server(self) -> None:
        _kill(self.server.proc, "server")

    def configure(self) -> None:
        configured = self.user.dstack("config", "--url", self.server.url, "--token", ADMIN_TOKEN)
        assert configured.code == 0, configured

    def revive(self) -> None:
        if self.server.proc is None or self.server.proc.poll() is not None:
            self.server.start()
        if self.runner.proc is None or self.runner.proc.poll() is not None:
            self.runner.start()
        wait_until(lambda: "faults" in _online(self.server), 30, "the runner to be online")

    def close(self) -> None:
        super().close()
        self.runner.stop()
        self.server.stop()


@dataclass
class LocalTeam(Team):
    """The local server the CLI starts on demand; it starts (and restarts) its runner."""

    def server_url(self) -> str:
        info = read_local_server(self.user.home)
        return info.url if info is not None else "http://127.0.0.1:9"

    def server_token(self) -> str:
        return (self.user.home / "server" / "token").read_text().strip()

    def remote_args(self) -> list[str]:
        return []

    def _server(self) -> psutil.Process | None:
        info = read_local_server(self.user.home)
        if info is None:
            return None
        try:
            process = psutil.Process(info.pid)
            return process if process.status() != psutil.STATUS_ZOMBIE else None
        except psutil.Error:
            return None

    def _runner(self) -> psutil.Process | None:
        """The runner of this home's work dir, whoever started it (a restarted server may
        keep the runner of the server before it)."""
        for process in self._runners():
            with contextlib.suppress(psutil.Error):
                if process.status() != psutil.STATUS_ZOMBIE:
                    return process
        return None

    def _runners(self) -> list[psutil.Process]:
        work_dir = str(self.user.home / "runner")
        found = []
        for process in psutil.process_iter(["cmdline"]):
            cmdline = process.info["cmdline"] or []
            if "dstack.runner" in cmdline and work_dir in cmdline:
                found.append(process)
        return found

    def kill_runner(self) -> None:
        runner = self._runner()
        assert runner is not None, "the local runner is not running"
        runner.kill()
        runner.wait(10)

    def kill_server(self) -> None:
        server = self._server()
        assert server is not None, "the local server is not running"
        server.kill()
        server.wait(10)

    def revive(self) -> None:
        """The next command starts the server; its supervisor restarts a killed runner after
        a back-off that grows with each quick exit: when none came back within 3 s, the
        server is restarted (cleanly), which starts a runner at once."""
        with _hooks_env(self.hooks.folder):  # the server passes it on to its runner
            if self._server() is None:
                ensure_local_server(self.user.home, executor="process")
            with contextlib.suppress(AssertionError):
                wait_until(lambda: self._runner() is not None, 3, "the local runner")
            if self._runner() is None:
                stop_local_server(self.user.home)
                ensure_local_server(self.user.home, executor="process")
        wait_until(lambda: self._runner() is not None, 30, "the local runner")
        wait_until(lambda: "local" in self._online(), 30, "the local runner to be online")

    def _online(self) -> set[str]:
        try:
            return {r.name for r in self.client().list_runners() if r.status != "offline"}
        except Exception:
            return set()

    def close(self) -> None:
        super().close()
        stop_local_server(self.user.home)
        self._end_stray_runners()

    def _end_stray_runners(self) -> None:
        """Runners of this home still running once its server stopped (one that outlived a
        killed server waits for it to come back): ended here, by pid."""
        for process in self._runners():
            with contextlib.suppress(psutil.Error):
                process.kill()


def _kill(proc: subprocess.Popen[bytes] | None, what: str) -> None:
    assert proc is not None, f"the {what} was never started"
    assert proc.poll() is None, f"the {what} is not running"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)


def _online(server: TeamServer) -> set[str]:
    try:
        return online_runners(server)
    except Exception:
        return set()


def run_name_in(text: str) -> str:
    match = re.search(r"\b([a-z]+-[a-z]+-\d+)\b", text)
    assert match, text
    return match.group(1)


def _jobs_dir(work_dir: Path) -> Path:
    settings = RunnerSettings(
        server_url="", token="", work_dir=work_dir.resolve(), job_user=default_job_user()
    )
    return settings.jobs_dir


def _with_hooks(folder: Path) -> Callable[[list[str]], list[str]]:
    def launch(args: list[str]) -> list[str]:
        # `env` execs the runner: the pid the test kills is the runner's own.
        return ["env", f"{HOOKS_ENV}={folder}", *args]

    return launch


def _remote_team(root: Path, hooks: Hooks) -> RemoteTeam:
    server = TeamServer(home=root / "server-home")
    work_dir = root / "runners" / "faults"
    runner = RunnerProcess("faults", work_dir, server, launcher=_with_hooks(hooks.folder))
    user = make_env(root / "user", "process")
    return RemoteTeam(user, hooks, _jobs_dir(work_dir), server=server, runner=runner)


def _local_team(root: Path, hooks: Hooks) -> LocalTeam:
    user = make_env(root / "user", "process")
    user.extra_env[HOOKS_ENV] = str(hooks.folder)
    return LocalTeam(user, hooks, _jobs_dir(user.home / "runner"))


TOPOLOGIES = ("local", "remote")


@pytest.fixture(scope="module")
def team(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Team]:
    """One team of the topology `request.param` names (default: remote) for a module's kill
    points (parametrize `team` indirectly); each test gets it revived (`fault_team`)."""
    topology = getattr(request, "param", "remote")
    assert topology in TOPOLOGIES, topology
    root = tmp_path_factory.mktemp(f"faults-{topology}")
    hooks = Hooks(root / "hooks")
    hooks.folder.mkdir()
    (root / "user").mkdir()
    team = _local_team(root, hooks) if topology == "local" else _remote_team(root, hooks)
    try:
        team.revive()
        _set_up_user(team, root)
        yield team
    finally:
        hooks.release()
        team.close()
        _stop_server(team.user.home)


@contextlib.contextmanager
def _hooks_env(folder: Path) -> Iterator[None]:
    previous = os.environ.get(HOOKS_ENV)
    os.environ[HOOKS_ENV] = str(folder)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(HOOKS_ENV, None)
        else:
            os.environ[HOOKS_ENV] = previous


def _set_up_user(team: Team, root: Path) -> None:
    """The workflow, and the tag `base` it depends on (two artifact folders, so that the
    dependency download has a middle)."""
    team.configure()
    team.user.workflows(WORKFLOWS)
    team.user.commit("the steps workflow")
    tag = root / "tag"
    for name in ("base1", "base2"):
        (tag / name).mkdir(parents=True)
        (tag / name / "seed.txt").write_text(f"seed of {name}\n")
    added = team.dstack("tags", "add", "base", "-a", str(tag / "base1"), "-a", str(tag / "base2"))
    assert added.code == 0, added


@pytest.fixture
def fault_team(team: Team) -> Iterator[Team]:
    """The module's team, every process up, no gate open."""
    team.hooks.release()
    team.hooks.clear()
    team.revive()
    yield team
    team.hooks.release()
