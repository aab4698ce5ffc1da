"""Local runs through the real CLI: the embedded server, the local runner, both executors."""

from __future__ import annotations

import json
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest
    from tests.e2e.conftest import Env


def test_two_step_workflow_runs_dependency_first(env: Env) -> None:
    env.workflows(
        """
        workflows:
          - name: prepare
            provider: bash
            commands:
              - echo "preparing in $(pwd)"
          - name: train
            provider: python
            file: train.py
            deps:
              - workflow: prepare
        """
    )
    env.write(".dstack/variables.yaml", "variables:\n  train:\n    epochs: 2\n")
    env.write(
        "train.py",
        "import os, sys\nprint('training for', os.environ['EPOCHS'], 'epochs')\n"
        "print('args', sys.argv[1:])\n",
    )
    env.commit()

    result = env.dstack("run", "train", "--epochs", "5", "--fast")

    assert result.code == 0, result
    assert result.out.index("preparing in") < result.out.index("training for 5 epochs")
    assert "args ['--fast']" in result.out
    runs = env.dstack("ps", "--json")
    assert runs.code == 0, runs
    assert '"status": "done"' in runs.out


def test_failing_step_fails_its_dependents_and_sets_exit_code(env: Env) -> None:
    env.workflows(
        """
        workflows:
          - name: broken
            provider: bash
            commands:
              - echo "about to fail" >&2
              - exit 3
          - name: after
            provider: bash
            deps:
              - workflow: broken
            commands:
              - echo "must not run"
        """
    )
    env.commit()

    result = env.dstack("run", "after")

    assert result.code == 3, result
    assert "about to fail" in result.err
    assert "must not run" not in result.out
    listed = env.dstack("ps", "-a", "--json")
    name = _only_run_name(listed.out)
    jobs = {j["workflow_name"]: j for j in env.run_json(name)["jobs"]}
    assert jobs["broken"]["status"] == "failed"
    assert jobs["broken"]["exit_code"] == 3
    assert jobs["after"]["status"] == "failed"
    assert jobs["after"]["reason"] == "dependency_failed"


def test_stop_is_graceful_and_keeps_the_last_lines(env: Env) -> None:
    env.workflows(
        """
        workflows:
          - name: serve
            provider: bash
            commands:
              - trap 'echo "got SIGTERM, saving"; exit 0' TERM
              - echo started
              - while true; do sleep 0.1; done
        """
    )
    env.commit()
    name = _submit_detached(env, "serve")
    _wait_for_line(env, name, "started")

    stopped = env.dstack("stop", name)

    assert stopped.code == 0, stopped
    run = env.wait_for(name, {"stopped", "failed", "done"})
    assert run["status"] == "stopped"
    assert run["jobs"][0]["reason"] == "stopped_by_user"
    assert "got SIGTERM, saving" in env.dstack("logs", name).out


def test_abort_kills_at_once(env: Env) -> None:
    env.workflows(
        """
        workflows:
          - name: stubborn
            provider: bash
            commands:
              - trap 'echo ignoring TERM' TERM
              - echo started
              - while true; do sleep 0.1; done
        """
    )
    env.commit()
    name = _submit_detached(env, "stubborn")
    _wait_for_line(env, name, "started")

    aborted = env.dstack("stop", "-x", name)

    assert aborted.code == 0, aborted
    run = env.wait_for(name, {"aborted", "stopped", "failed"}, timeout=20)
    assert run["status"] == "aborted"
    assert run["jobs"][0]["reason"] == "aborted_by_user"


def test_job_sees_uncommitted_and_untracked_changes(env: Env) -> None:
    env.write("config.txt", "committed\n")
    env.write(".gitignore", "secret.txt\n")
    env.workflows(
        """
        workflows:
          - name: show
            provider: bash
            commands:
              - cat config.txt new.txt
              - test ! -e secret.txt && echo "ignored file absent"
              - od -An -tx1 blob.bin
        """
    )
    env.commit()
    env.write("config.txt", "edited, not committed\n")
    env.write("new.txt", "untracked file\n")
    env.write("secret.txt", "ignored\n")
    (env.repo / "blob.bin").write_bytes(bytes([0, 255, 10, 7]))

    result = env.dstack("run", "show")

    assert result.code == 0, result
    assert "edited, not committed" in result.out
    assert "untracked file" in result.out
    assert "ignored file absent" in result.out
    assert "00 ff 0a 07" in result.out


def test_job_that_no_runner_can_satisfy_fails_at_once(process_env: Env) -> None:
    process_env.workflows(
        """
        workflows:
          - name: huge
            provider: bash
            commands: [echo never]
            resources:
              gpu:
                name: A100
                count: 4
        """
    )
    process_env.commit()

    result = process_env.dstack("run", "huge", timeout=60)

    assert result.code == 1, result
    assert "A100" in result.err
    assert "no capacity" in result.err or "no_capacity" in result.err


def test_logs_since_and_follow(process_env: Env) -> None:
    process_env.workflows(
        """
        workflows:
          - name: ticks
            provider: bash
            commands:
              - for i in 1 2 3; do echo "tick $i"; sleep 0.3; done
        """
    )
    process_env.commit()
    name = _submit_detached(process_env, "ticks")

    followed = process_env.dstack("logs", "-f", name)

    assert followed.code == 0, followed
    assert [line for line in followed.out.splitlines() if line.startswith("tick")] == [
        "tick 1",
        "tick 2",
        "tick 3",
    ]
    assert "tick 1" in process_env.dstack("logs", name, "--since", "10m").out
    later = process_env.dstack("logs", name, "--since", "2099-01-01T00:00:00")
    assert later.code == 0, later
    assert later.out == ""
    bad = process_env.dstack("logs", name, "--since", "yesterday-ish")
    assert bad.code == 1
    assert "--since" in bad.err


def test_concurrent_runs_overlap(process_env: Env) -> None:
    # Each job announces itself, then waits for the other one: both finish only if the
    # runner really ran them at the same time (one after the other, the first times out).
    # The jobs run as the runner's job user, who cannot enter pytest's 0700 temp folders.
    meeting = Path(tempfile.mkdtemp(prefix="dstack-meeting-"))
    meeting.chmod(0o1777)
    try:
        _meet(process_env, meeting)
    finally:
        shutil.rmtree(meeting, ignore_errors=True)


def _meet(process_env: Env, meeting: Path) -> None:
    process_env.workflows(
        f"""
        workflows:
          - name: meet
            provider: bash
            commands:
              - M={meeting}
              - touch $M/$DSTACK_RUN_NAME
              - for i in $(seq 1 300); do [ $(ls $M | wc -l) -ge 2 ] && break; sleep 0.1; done
              - test $(ls $M | wc -l) -ge 2 && echo "met the other run"
        """
    )
    process_env.commit()
    first = _submit_detached(process_env, "meet")
    second = _submit_detached(process_env, "meet")

    runs = [process_env.wait_for(n, {"done", "failed"}, timeout=90) for n in (first, second)]

    assert [r["status"] for r in runs] == ["done", "done"]
    assert "met the other run" in process_env.dstack("logs", first).out


def test_run_outside_a_git_repository_says_so(
    process_env: Env, tmp_path_factory: pytest.TempPathFactory
) -> None:
    outside = tmp_path_factory.mktemp("plain")
    result = process_env.dstack("run", "bash", "-c", "echo hi", cwd=outside)
    assert result.code == 1
    assert "git" in result.err
    assert "Traceback" not in result.err


def test_provider_run_without_workflow(process_env: Env) -> None:
    result = process_env.dstack("run", "bash", "-c", "echo provider says hi")
    assert result.code == 0, result
    assert "provider says hi" in result.out


def _submit_detached(env: Env, workflow: str) -> str:
    result = env.dstack("run", "-d", workflow)
    assert result.code == 0, result
    return _only_run_name(env.dstack("ps", "--json").out, newest=True)


def _only_run_name(ps_json: str, newest: bool = False) -> str:
    runs = json.loads(ps_json)
    assert runs, "no runs listed"
    if not newest:
        assert len(runs) == 1, runs
    return str(runs[0]["name"])


def _wait_for_line(env: Env, name: str, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in env.dstack("logs", name).out:
        assert time.monotonic() < deadline, f"'{text}' never appeared in the logs of {name}"
        time.sleep(0.2)


def test_ctrl_c_without_a_terminal_detaches_and_the_run_goes_on(process_env: Env) -> None:
    process_env.workflows(
        """
        workflows:
          - name: slow
            provider: bash
            commands: [echo started, sleep 600]
        """
    )
    process_env.commit()
    attached = process_env.spawn("run", "slow")
    name = ""
    deadline = time.monotonic() + 60
    while not name:
        assert time.monotonic() < deadline, "the run never appeared"
        runs = json.loads(process_env.dstack("ps", "--json").out)
        name = runs[0]["name"] if runs and runs[0]["status"] == "running" else ""
        time.sleep(0.2)

    attached.send_signal(signal.SIGINT)
    _, err = attached.communicate(timeout=30)

    assert attached.returncode == 0, err
    assert f"Detached. The run keeps going: `dstack logs -f {name}`" in err
    assert process_env.run_json(name)["status"] == "running"
    assert process_env.dstack("stop", "-x", name).code == 0
