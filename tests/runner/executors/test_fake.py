"""What `FakeExecutor` records of what it was asked (its behaviour: the contract suite)."""

from __future__ import annotations

from pathlib import Path

from tests.runner.conftest import Output, make_context

from dstack.models.job import JobSpec
from dstack.runner.executors.base import RunnerIdentity
from dstack.runner.executors.fake import FakeExecutor, FakeJob


def test_the_fake_records_jobs_signals_and_reconciles(tmp_path: Path) -> None:
    executor = FakeExecutor(default=FakeJob(runs=True, on_term=None))
    owner = RunnerIdentity(runner_id="r1", server_id="s1")
    executor.reconcile(owner, {"job-1"})
    spec = JobSpec(provider="bash", commands=["train"])

    handle = executor.start(make_context(tmp_path, spec, Output()))
    handle.stop(grace=0.01)
    handle.kill()
    handle.cleanup()

    assert [h.job.spec.commands for h in executor.started] == [["train"]]
    assert handle.signals == ["TERM", "KILL"]
    assert handle.cleaned
    assert executor.reconciled == [(owner, frozenset({"job-1"}))]
    assert executor.owner == owner
