"""The runner's pause points (`dstack.runner.faults`): inert unless a test opens a gate."""

from __future__ import annotations

import threading
from pathlib import Path

from tests.e2e.remote_helpers import wait_until

from dstack.runner.faults import pause_point
from dstack.settings import RUNNER_FAULT_HOOKS as HOOKS_ENV


def test_a_pause_point_without_the_variable_does_nothing(tmp_path: Path) -> None:
    (tmp_path / "pause-claim").touch()

    pause_point("claim", "job1", environ={})

    assert not (tmp_path / "at-claim-job1").exists()


def test_a_pause_point_without_its_gate_passes(tmp_path: Path) -> None:
    (tmp_path / "pause-sync").touch()

    pause_point("claim", "job1", environ={HOOKS_ENV: str(tmp_path)})

    assert not (tmp_path / "at-claim-job1").exists()


def test_an_open_gate_holds_the_runner_until_it_is_removed(tmp_path: Path) -> None:
    gate = tmp_path / "pause-upload"
    gate.touch()
    paused = threading.Thread(
        target=pause_point, args=("upload", "job1"), kwargs={"environ": {HOOKS_ENV: str(tmp_path)}}
    )
    paused.start()

    wait_until(lambda: (tmp_path / "at-upload-job1").exists(), 10, "the marker")
    assert paused.is_alive()
    gate.unlink()
    paused.join(10)

    assert not paused.is_alive()
