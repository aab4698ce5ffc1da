"""Spot interruptions end to end, all real processes on loopback: a `dstack server`, a runner
that watches a fake instance metadata service (served here) and a second runner; the user
drives everything with the CLI.

A training script counts epochs from a checkpoint in its artifact folder. After its second
epoch the test posts an interruption notice: the first runner saves the checkpoint and hands
the job back, the server re-queues it, and the second runner resumes from the checkpoint.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.e2e.conftest import Env, _stop_server, make_env
from tests.e2e.remote_helpers import ADMIN_TOKEN, RunnerProcess, TeamServer, online_runners
from tests.e2e.remote_helpers import wait_until as wait_for
from tests.e2e.test_remote import _remote_run, _wait
from tests.infra.imds import FakeImds

TRAIN = """\
import pathlib, time

checkpoint = pathlib.Path("ckpt/epoch.txt")
hold = pathlib.Path({hold!r})
start = int(checkpoint.read_text()) if checkpoint.exists() else 0
print(f"starting at epoch {{start}}", flush=True)
checkpoint.parent.mkdir(exist_ok=True)
for epoch in range(start + 1, 9):
    time.sleep(0.2)
    checkpoint.write_text(str(epoch))
    print(f"epoch {{epoch}}", flush=True)
    while start == 0 and epoch >= 2 and hold.exists():  # the first attempt waits to be interrupted
        time.sleep(0.1)
"""


@pytest.fixture
def imds() -> Iterator[FakeImds]:
    fake = FakeImds().up()
    yield fake
    fake.down()


@pytest.fixture
def spot_team(
    tmp_path: Path, imds: FakeImds
) -> Iterator[tuple[TeamServer, RunnerProcess, RunnerProcess]]:
    server = TeamServer(home=tmp_path / "server-home")
    watch = ["--metadata-url", imds.url, "--metadata-interval", "0.2"]
    spot = RunnerProcess("spot-1", tmp_path / "runners" / "spot-1", server, extra_args=watch)
    other = RunnerProcess("spot-2", tmp_path / "runners" / "spot-2", server)
    try:
        server.start()
        spot.start()  # alone at first: the job starts there
        wait_for(lambda: "spot-1" in online_runners(server), 30, "the first runner")
        yield server, spot, other
    finally:
        for runner in (spot, other):
            runner.stop()
        server.stop()


@pytest.fixture
def user(
    tmp_path: Path, spot_team: tuple[TeamServer, RunnerProcess, RunnerProcess]
) -> Iterator[Env]:
    (tmp_path / "user").mkdir()
    env = make_env(tmp_path / "user", "process")
    result = env.dstack("config", "--url", spot_team[0].url, "--token", ADMIN_TOKEN)
    assert result.code == 0, result
    try:
        yield env
    finally:
        _stop_server(env.home)


@pytest.fixture
def held() -> Iterator[Path]:
    """A folder every user can read: process jobs may run as a user of their own."""
    folder = Path(tempfile.mkdtemp(prefix="dstack-spot-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _epochs(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"^epoch (\d+)$", text, re.MULTILINE)]


def test_an_interrupted_spot_job_resumes_from_its_checkpoint_on_another_runner(
    user: Env,
    spot_team: tuple[TeamServer, RunnerProcess, RunnerProcess],
    imds: FakeImds,
    held: Path,
) -> None:
    server, _, other = spot_team
    hold = held / "hold"
    hold.touch()
    user.write("train.py", TRAIN.format(hold=str(hold)))
    user.workflows(
        """
        workflows:
          - name: train
            provider: bash
            commands:
              - python3 train.py
            artifacts: [ckpt]
            resources:
              interruptible: true
        """
    )
    user.commit("train")
    name = _remote_run(user, "train")

    def logs() -> str:
        result = user.dstack("logs", name, "--remote")
        return result.out

    wait_for(lambda: 2 in _epochs(logs()), 60, "epoch 2 on the first runner")
    other.start()
    wait_for(lambda: "spot-2" in online_runners(server), 30, "the second runner")
    imds.post_notice("terminate", "2026-12-07T04:30:00Z")

    run = _wait(user, name, {"done", "failed"}, timeout=120)
    assert run["status"] == "done", run
    job = run["jobs"][0]  # type: ignore[index]
    assert job["runner_name"] == "spot-2"
    assert job["attempt"] == 1

    result = user.dstack("logs", name, "--remote")
    assert result.code == 0, result
    text = result.out
    starts = [int(n) for n in re.findall(r"^starting at epoch (\d+)$", text, re.MULTILINE)]
    assert len(starts) == 2, text
    assert starts[0] == 0
    assert starts[1] == 2  # resumed from the checkpoint, not from scratch
    assert _epochs(text) == list(range(1, 9)), text  # no epoch ran twice
    both = result.out + result.err
    assert "interrupted: spot instance interrupted: terminate" in both
    assert "--- attempt 1 ended: spot instance interrupted: terminate" in both

    target = user.repo.parent / "got"
    copied = user.dstack("cp", name, "ckpt", str(target), "--remote")
    assert copied.code == 0, copied
    assert (target / "epoch.txt").read_text() == "8"

    shown = user.dstack("ps", name, "--remote")
    assert shown.code == 0, shown
    rows = [line.split() for line in shown.out.splitlines()]
    attempts = [row for row in rows if len(row) > 2 and row[0] == "train" and row[1] in "12"]
    assert [row[1:3] for row in attempts] == [["1", "spot-1"], ["2", "spot-2"]], shown.out
    assert "re-queued (interrupted)" in shown.out
    assert "train #1: spot instance interrupted: terminate" in shown.out
    assert "attempt 1 ended" not in result.out  # the end line is not output of the job
