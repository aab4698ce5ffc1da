"""S0: `dstack --help` against `python -c pass` (interpreter start-up is the floor).
S0': the first `dstack run` of the day, no local server yet, against a warm one."""

from __future__ import annotations

import sys

from benchmarks.harness import Budget, Row, median, quiet, sample
from benchmarks.scenarios.base import Bench
from benchmarks.scenarios.runs import HELLO
from benchmarks.workspace import BenchError, dstack_command, user_environ


def help_startup(bench: Bench) -> list[Row]:
    runs = max(bench.sizes.runs, 5) * 2  # cheap, and the noisiest of all
    env = user_environ()
    ours = sample(lambda: quiet([*dstack_command(), "--help"], env=env), runs=runs)
    base = sample(lambda: quiet([sys.executable, "-c", "pass"], env=env), runs=runs)
    return [
        Row(
            "S0",
            "dstack --help",
            ours,
            baseline=median(base),
            baseline_name="python -c pass",
            budget=Budget(0.08),
        )
    ]


def cold_start(bench: Bench) -> list[Row]:
    """S0': the first `dstack run` of the day: a one-step `echo hello` workflow in a home whose
    local server is not running (stopped, as an idle one stops itself): the server and its
    runner start, the job runs, the command exits. The baseline is the same command with the
    server warm, measured in between."""
    from dstack.server.local import stop_local_server

    with bench.workspace() as ws:
        ws.workflows(HELLO)

        def stop() -> None:
            if not stop_local_server(ws.home):
                raise BenchError("no local server was running to stop")

        def run() -> None:
            if "hello" not in ws.dstack("run", "hello"):
                raise BenchError("dstack run hello did not print hello")

        cold, warm = [], []
        for _ in range(bench.sizes.runs):
            cold += sample(run, runs=1, setup=stop, warmup=0)
            warm += sample(run, runs=1, warmup=0)
    return [
        Row(
            "S0'",
            "dstack run, no local server yet",
            cold,
            baseline=median(warm),
            baseline_name="the same, warm",
            budget=Budget(1.5),
        )
    ]
