"""One contract, every `Executor`: the fake, host processes and Docker.

Each test gives a job's commands and, for the fake (which runs nothing), a `FakeJob` script
saying what those commands would do; the real executors run the commands.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tests.runner.conftest import Output, make_context

from dstack.models.job import JobSpec, TerminationReason
from dstack.models.logs import LogStream
from dstack.providers.images import ImageSettings
from dstack.runner.errors import JobStartError
from dstack.runner.executors.base import Executor, JobHandle, RunnerIdentity
from dstack.runner.executors.docker import DockerExecutor
from dstack.runner.executors.fake import FakeExecutor, FakeJob
from dstack.runner.executors.process import ProcessExecutor

from .conftest import IMAGE

OUT, ERR = LogStream.STDOUT, LogStream.STDERR
SECRET = "runner-secret-value"


@dataclass
class Harness:
    """An executor under test, working for `owner`, and the jobs it started."""

    executor: Executor
    tmp_path: Path
    unstartable: dict[str, Any]
    """JobSpec fields this executor cannot start a job with."""
    owner: RunnerIdentity
    handles: list[JobHandle] = field(default_factory=list)

    def start(
        self, fake: FakeJob, *commands: str, env: dict[str, str] | None = None, **spec: Any
    ) -> tuple[JobHandle, Output]:
        """Start a job running `commands` (the fake: doing what `fake` says)."""
        job = JobSpec(provider="bash", workflow_name="train", commands=list(commands), **spec)
        output = Output()
        context = make_context(self.tmp_path, job, output, env=env)
        if isinstance(self.executor, FakeExecutor):
            self.executor.scripts[context.job_id] = fake
        handle = self.executor.start(context)
        self.handles.append(handle)
        return handle, output


def _fake(tmp_path: Path, request: pytest.FixtureRequest) -> tuple[Executor, dict[str, Any]]:
    return FakeExecutor(), {}


def _process(tmp_path: Path, request: pytest.FixtureRequest) -> tuple[Executor, dict[str, Any]]:
    return ProcessExecutor(), {"image": "ubuntu:22.04"}


def _docker(tmp_path: Path, request: pytest.FixtureRequest) -> tuple[Executor, dict[str, Any]]:
    client = request.getfixturevalue("client")
    executor = DockerExecutor(client, images=ImageSettings(default_image=IMAGE))
    return executor, {"image": "dstack-test/does-not-exist:1"}


FACTORIES: dict[str, Callable[[Path, pytest.FixtureRequest], tuple[Executor, dict[str, Any]]]] = {
    "fake": _fake,
    "process": _process,
    "docker": _docker,
}


@pytest.fixture(params=["fake", "process", pytest.param("docker", marks=pytest.mark.docker)])
def harness(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Harness]:
    # The runner's own secrets are in its environment; no job may see them.
    monkeypatch.setenv("DSTACK_RUNNER_TOKEN", SECRET)
    executor, unstartable = FACTORIES[request.param](tmp_path, request)
    name = f"contract-{request.node.name[:40]}-{time.monotonic_ns()}"
    owner = RunnerIdentity(runner_id=name, server_id="test-executor-contract")
    executor.reconcile(owner, set())
    harness = Harness(executor, tmp_path, unstartable, owner)
    yield harness
    for handle in harness.handles:
        handle.cleanup()
    executor.reconcile(owner, set())


def _wait_for(predicate: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _started_running(harness: Harness, *commands: str, **fake: Any) -> tuple[JobHandle, Output]:
    """A job that says `ready` and then runs until it is stopped or killed."""
    script = FakeJob(output=((OUT, b"ready\n"),), runs=True, **fake)
    loop = "while true; do sleep 0.05; done"
    handle, output = harness.start(script, *commands, "echo ready", loop)
    _wait_for(lambda: "ready" in output.text(OUT))
    return handle, output


def test_a_job_that_succeeds_ends_with_0(harness: Harness) -> None:
    handle, output = harness.start(FakeJob(output=((OUT, b"hi\n"),)), "echo hi")

    result = handle.wait(60)

    assert result is not None
    assert (result.exit_code, result.reason) == (0, TerminationReason.DONE)
    assert output.text(OUT) == "hi\n"


def test_output_streams_and_the_first_failing_command(harness: Harness) -> None:
    fake = FakeJob(output=((OUT, b"out\n"), (ERR, b"err\n")), exit_code=3)
    handle, output = harness.start(fake, "echo out", "echo err >&2", "exit 3", "echo never")

    result = handle.wait(60)

    assert result is not None
    assert (result.exit_code, result.reason) == (3, TerminationReason.EXIT_CODE)
    assert (output.text(OUT), output.text(ERR)) == ("out\n", "err\n")


def test_the_job_runs_in_its_working_dir(harness: Harness) -> None:
    (harness.tmp_path / "job" / "code" / "sub").mkdir(parents=True)
    (harness.tmp_path / "job" / "code" / "sub" / "hello.txt").write_text("from the repo\n")
    fake = FakeJob(output=((OUT, b"from the repo\n"),))

    handle, output = harness.start(fake, "cat hello.txt", working_dir="sub")

    assert handle.wait(60) is not None
    assert output.text(OUT) == "from the repo\n"


def test_the_job_sees_its_env_and_not_the_runners(harness: Harness) -> None:
    fake = FakeJob(output=((OUT, b"hi\ntoken=none\n"),))
    handle, output = harness.start(
        fake, "echo $GREETING", "echo token=${DSTACK_RUNNER_TOKEN:-none}", env={"GREETING": "hi"}
    )

    assert handle.wait(60) is not None
    assert output.text(OUT) == "hi\ntoken=none\n"
    assert SECRET not in output.text(OUT) + output.text(ERR)


def test_wait_returns_none_while_the_job_runs(harness: Harness) -> None:
    handle, _ = _started_running(harness)

    assert handle.wait(0.2) is None
    handle.kill()
    result = handle.wait(30)

    assert result is not None
    assert handle.wait(0) == result  # the same answer, again


def test_stop_sends_sigterm_the_job_can_handle(harness: Harness) -> None:
    handle, output = _started_running(
        harness, "trap 'echo got TERM; exit 0' TERM", on_term=0, term_output=((OUT, b"got TERM\n"),)
    )

    handle.stop(grace=10)
    result = handle.wait(30)

    assert result is not None
    assert result.exit_code == 0
    assert "got TERM" in output.text(OUT)


def test_stop_kills_a_job_that_ignores_sigterm_after_the_grace(harness: Harness) -> None:
    handle, _ = _started_running(harness, "trap '' TERM", on_term=None)

    handle.stop(grace=0.3)
    result = handle.wait(30)

    assert result is not None
    assert result.exit_code == 137


def test_kill_ends_the_job_at_once(harness: Harness) -> None:
    handle, _ = _started_running(harness, "trap '' TERM", on_term=None)

    handle.kill()
    result = handle.wait(30)

    assert result is not None
    assert result.exit_code == 137


def test_stop_kill_and_cleanup_of_an_ended_job_change_nothing(harness: Harness) -> None:
    handle, _ = harness.start(FakeJob(exit_code=5), "exit 5")
    first = handle.wait(60)

    handle.stop(grace=1)
    handle.kill()
    handle.cleanup()
    handle.cleanup()

    assert first is not None
    assert first.exit_code == 5
    assert handle.wait(1) == first


def test_cleanup_ends_a_running_job(harness: Harness) -> None:
    handle, _ = _started_running(harness)

    handle.cleanup()

    assert handle.wait(30) is not None


def test_reconcile_leaves_the_jobs_the_runner_still_owns(harness: Harness) -> None:
    handle, _ = _started_running(harness)

    harness.executor.reconcile(harness.owner, {"job-1"})
    harness.executor.reconcile(harness.owner, {"job-1"})

    assert handle.wait(0.5) is None


def test_a_job_that_cannot_start_raises_job_start_error(harness: Harness) -> None:
    fake = FakeJob(start_error=JobStartError("workflow 'train' cannot start"))
    with pytest.raises(JobStartError) as err:
        harness.start(fake, "true", **harness.unstartable)

    assert isinstance(err.value.reason, TerminationReason)
    assert err.value.reason is not TerminationReason.DONE
