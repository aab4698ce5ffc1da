"""Crashes of the runner and of the local server lose no artifact a sync had seen.

Real processes: the `dstack` CLI, the local server it starts, that server's `dstack-runner`,
each killed with SIGKILL. The runner is found by the lock it holds on its work dir, the
server by its `server.json`. Waits are bounded; nothing asserts how fast anything is.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import pytest

from dstack.runner.lock import lock_holder
from dstack.server.local import read_local_server, stop_local_server
from dstack.settings import RUNNER_TEST_CRASH_AT as CRASH_AT_ENV
from dstack.settings import RUNNER_TEST_CRASH_COUNT as CRASH_COUNT_ENV

if TYPE_CHECKING:
    from tests.e2e.conftest import Env


def _e2e() -> ModuleType:
    """The end-to-end fixtures' module (`Env`, `make_env`): the real CLI in a temp repo."""
    name = "dstack_tests_e2e_env"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "e2e" / "conftest.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


FINAL = {"done", "failed", "stopped", "aborted"}

WRITES_THEN_WAITS = """
workflows:
  - name: train
    provider: bash
    commands:
      - mkdir -p out/deep
      - echo first > out/a.txt
      - echo second > out/deep/b.txt
      - echo written
      - sleep 600
    artifacts: [out]
"""

WRITES_WAITS_WRITES = """
workflows:
  - name: train
    provider: bash
    commands:
      - mkdir -p out
      - echo first > out/a.txt
      - echo written
      - while [ ! -e "$GO_FILE" ]; do sleep 0.2; done
      - echo second > out/b.txt
      - echo finished
    artifacts: [out]
"""

WRITES_AND_ENDS = """
workflows:
  - name: train
    provider: bash
    commands:
      - mkdir -p out
      - for i in 1 2 3 4 5; do echo "file $i" > out/f$i.txt; done
      - echo written
    artifacts: [out]
"""


@pytest.fixture
def user(tmp_path: Path) -> Iterator[Env]:
    """A process-executor user whose local server (and any runner it left) stop at the end."""
    env: Env = _e2e().make_env(tmp_path, "process")
    try:
        yield env
    finally:
        stop_local_server(env.home)
        _kill(_runner_pid(env))


def _runner_pid(env: Env) -> int | None:
    return lock_holder(env.home / "runner" / "runner.lock") or None


def _new_runner(env: Env, old: int) -> int | None:
    pid = _runner_pid(env)
    return pid if pid not in (None, old) else None


def _kill(pid: int | None) -> None:
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _until(what: str, check: Callable[[], object], timeout: float = 90) -> object:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return found


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    return False


def _submit(env: Env) -> str:
    result = env.dstack("run", "-d", "train")
    assert result.code == 0, result
    runs = json.loads(env.dstack("ps", "--json").out)
    return str(runs[0]["name"])


def _logs(env: Env, name: str) -> str:
    return env.dstack("logs", name).out


def _kill_runner(env: Env) -> int:
    pid = _runner_pid(env)
    assert pid, "no runner holds the work dir"
    os.kill(pid, signal.SIGKILL)
    _until("the runner to die", lambda: _gone(pid))
    return pid


def _kill_server(env: Env) -> int:
    info = read_local_server(env.home)
    assert info is not None, "no local server"
    os.kill(info.pid, signal.SIGKILL)
    _until("the server to die", lambda: _gone(info.pid))
    return info.pid


def _listed(env: Env, name: str) -> set[str]:
    result = env.dstack("ls", name, "-r")
    assert result.code == 0, result
    return set(result.out.split())


def _copied(env: Env, name: str, target: Path) -> dict[str, str]:
    """The run's `out` artifact, copied out (every blob verified on the way)."""
    result = env.dstack("cp", name, "out", str(target))
    assert result.code == 0, result
    return {
        str(p.relative_to(target)): p.read_text().strip()
        for p in sorted(target.rglob("*"))
        if p.is_file()
    }


def test_a_runner_killed_mid_job_saves_what_the_job_wrote_after_restarting(
    user: Env, tmp_path: Path
) -> None:
    user.workflows(WRITES_THEN_WAITS)
    user.commit()
    name = _submit(user)
    _until("the job to write its files", lambda: "written" in _logs(user, name))

    killed = _kill_runner(user)

    run = user.wait_for(name, FINAL, timeout=120)
    assert _runner_pid(user) not in (None, killed)  # the server started a new runner
    job = run["jobs"][0]
    assert (run["status"], job["reason"]) == ("failed", "runner_lost")
    assert "restarted" in job["message"]
    assert {"a.txt", "deep/b.txt"} <= {p.removeprefix("out/") for p in _listed(user, name)}
    assert _copied(user, name, tmp_path / "copy") == {"a.txt": "first", "deep/b.txt": "second"}
    assert "written" in _logs(user, name)


def test_a_runner_killed_twice_in_a_row_still_saves_everything(user: Env, tmp_path: Path) -> None:
    user.workflows(WRITES_THEN_WAITS)
    user.commit()
    name = _submit(user)
    _until("the job to write its files", lambda: "written" in _logs(user, name))

    first = _kill_runner(user)
    # The next runner recovers the job; kill it as soon as it holds the work dir.
    second = _until("a new runner", lambda: _new_runner(user, first))
    assert isinstance(second, int)
    _kill(second)

    run = user.wait_for(name, FINAL, timeout=150)
    assert run["status"] == "failed"
    assert _copied(user, name, tmp_path / "copy") == {"a.txt": "first", "deep/b.txt": "second"}


def test_the_local_server_killed_mid_run_leaves_the_job_running_to_done(
    user: Env, tmp_path: Path
) -> None:
    # The job (its own user when the tests run as root) must see the file appear.
    gate = Path(tempfile.mkdtemp(prefix="dstack-gate-"))
    gate.chmod(0o755)
    go = gate / "go"
    user.workflows(WRITES_WAITS_WRITES.replace('"$GO_FILE"', str(go)))
    user.commit()
    try:
        _server_killed_mid_run(user, tmp_path, go)
    finally:
        shutil.rmtree(gate, ignore_errors=True)


def _server_killed_mid_run(user: Env, tmp_path: Path, go: Path) -> None:
    name = _submit(user)
    _until("the job to write its first file", lambda: "written" in _logs(user, name))
    runner = _runner_pid(user)

    _kill_server(user)
    go.touch()  # the job goes on while no server listens
    time.sleep(1)
    # Any command starts a new local server (on a new port); the runner follows it.
    run = user.wait_for(name, FINAL, timeout=120)

    assert run["status"] == "done", run
    assert _runner_pid(user) == runner  # the same runner, never a second one
    assert _copied(user, name, tmp_path / "copy") == {"a.txt": "first", "b.txt": "second"}
    assert "finished" in _logs(user, name)


def test_the_local_server_killed_during_the_final_upload_loses_no_manifest(
    user: Env, tmp_path: Path
) -> None:
    """The runner crashes where the old code lost the reference (files moved into the
    store, manifest not posted yet); the server dies too. Both come back: nothing lost."""
    counter = tmp_path / "crashes"
    counter.write_text("1")
    user.extra_env.update({CRASH_AT_ENV: "artifacts-stored", CRASH_COUNT_ENV: str(counter)})
    user.workflows(WRITES_AND_ENDS)
    user.commit()
    name = _submit(user)
    _until("the runner to crash", lambda: counter.read_text().strip() == "0")
    _kill_server(user)

    run = user.wait_for(name, FINAL, timeout=120)

    expected = {f"f{i}.txt": f"file {i}" for i in range(1, 6)}
    assert run["status"] == "done", run  # the job's own end, noted before the crash
    assert _copied(user, name, tmp_path / "copy") == expected


@pytest.mark.parametrize("crashes", [1, 2])
def test_a_runner_crashing_between_storing_and_posting_loses_nothing(
    user: Env, tmp_path: Path, crashes: int
) -> None:
    counter = tmp_path / "crashes"
    counter.write_text(str(crashes))
    user.extra_env.update({CRASH_AT_ENV: "artifacts-stored", CRASH_COUNT_ENV: str(counter)})
    user.workflows(WRITES_AND_ENDS)
    user.commit()
    name = _submit(user)

    run = user.wait_for(name, FINAL, timeout=150)

    assert counter.read_text().strip() == "0"  # it did crash there, `crashes` times
    expected = {f"f{i}.txt": f"file {i}" for i in range(1, 6)}
    assert run["status"] == "done", run
    assert _copied(user, name, tmp_path / "copy") == expected
    assert "written" in _logs(user, name)
