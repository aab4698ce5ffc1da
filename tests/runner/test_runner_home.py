"""`dstack-runner start` keeps its work dir in `$DSTACK_HOME/runner` unless told otherwise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.e2e.remote_helpers import free_port, wait_until


def test_the_default_work_dir_is_under_dstack_home(tmp_path: Path) -> None:
    home, user_home = tmp_path / "dstack-home", tmp_path / "user"
    user_home.mkdir()
    env = {**os.environ, "DSTACK_HOME": str(home), "HOME": str(user_home)}
    server = f"http://127.0.0.1:{free_port()}"  # nobody listens: the runner keeps trying
    command = [sys.executable, "-m", "dstack.runner", "start", "--server", server]
    proc = subprocess.Popen(
        [*command, "--token", "t", "--executor", "process"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: (home / "runner" / "runner.lock").exists(), 30, "the work dir")
    finally:
        proc.kill()  # it retries its registration for a minute before it exits
        proc.wait(30)

    assert not (user_home / ".dstack").exists()
