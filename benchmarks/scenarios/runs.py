"""S1-S3: runs through the CLI on the process executor, the local server warm.

Every sample is one `dstack run` from start to exit: the command exits when the run ends,
so the time includes submitting, scheduling, running, log shipping and artifact sync.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from benchmarks.harness import Budget, Row, median, quiet, sample
from benchmarks.scenarios.base import Bench
from benchmarks.workspace import BenchError, user_environ

HELLO = """
workflows:
  - name: hello
    provider: bash
    commands: [echo hello]
"""

# Each step passes 1 MB on: A writes it, B and C read what came before and write their own.
CHAIN = """
workflows:
  - name: step-a
    provider: bash
    commands:
      - mkdir -p a && head -c 1000000 /dev/urandom > a/data.bin
    artifacts: [a]
  - name: step-b
    provider: bash
    deps:
      - workflow: step-a
    commands:
      - mkdir -p b && head -c 1000000 a/data.bin > b/data.bin
    artifacts: [b]
  - name: step-c
    provider: bash
    deps:
      - workflow: step-b
    commands:
      - mkdir -p c && head -c 1000000 b/data.bin > c/data.bin
    artifacts: [c]
"""


def one_step(bench: Bench) -> list[Row]:
    """S1: a one-step `echo hello` workflow against `bash -c`."""
    with bench.workspace() as ws:
        ws.workflows(HELLO)

        def run() -> None:
            if "hello" not in ws.dstack("run", "hello"):
                raise BenchError("dstack run hello did not print hello")

        ours = sample(run, runs=bench.sizes.runs)
        ws.overrides["DSTACK_CLI_SERVER"] = "0"  # every command imports the CLI itself
        try:
            full = sample(run, runs=bench.sizes.runs)
        finally:
            del ws.overrides["DSTACK_CLI_SERVER"]
    base = sample(lambda: quiet(["bash", "-c", "echo hello"]), runs=bench.sizes.runs)
    return [
        Row(
            "S1",
            "dstack run (echo hello)",
            ours,
            baseline=median(base),
            baseline_name="bash -c",
            budget=Budget(0.25),
        ),
        _against_pydantic(ours, bench.sizes.runs),
        Row("S1", "dstack run, no command server (DSTACK_CLI_SERVER=0)", full),
    ]


def _against_pydantic(ours: list[float], runs: int) -> Row:
    """S1 against importing pydantic, which the CLI's start cannot avoid: a ratio that the
    machine's speed cancels out of."""
    command = [sys.executable, "-c", "import pydantic"]
    base = sample(lambda: quiet(command, env=user_environ()), runs=runs)
    return Row(
        "S1",
        "dstack run (echo hello), vs import pydantic",
        ours,
        baseline=median(base),
        baseline_name="import pydantic",
        budget=Budget(3.0, times_baseline=True),
    )


def chain(bench: Bench) -> list[Row]:
    """S2: A->B->C passing 1 MB artifacts, (a) forced with `--reload`, (b) all cached."""
    with bench.workspace() as ws:
        ws.workflows(CHAIN)
        ws.dstack("run", "step-c")
        forced = sample(lambda: ws.dstack("run", "step-c", "--reload"), runs=bench.sizes.runs)
        cached = sample(
            lambda: _cached_run(*ws.dstack_full("run", "step-c")), runs=bench.sizes.runs
        )
    return [
        Row("S2a", "chain A->B->C, --reload", forced, budget=Budget(0.35)),
        Row("S2b", "chain A->B->C, cached", cached, budget=Budget(0.25)),
    ]


def _cached_run(out: str, err: str) -> None:
    if "reused" not in out + err:
        raise BenchError(f"the unchanged chain was not reused:\n{(out + err)[-1000:]}")


def parallel(bench: Bench) -> list[Row]:
    """S3: N independent `sleep 0.2` jobs, two at a time, against `xargs -P 2`.

    The jobs are the dependencies of one final no-op job, so one `dstack run` holds them
    all; each asks for half the runner's CPUs, which leaves two slots."""
    count = bench.sizes.parallel_jobs
    cpu = max(1, (os.cpu_count() or 2) // 2)
    with bench.workspace() as ws:
        ws.workflows(_parallel_workflows(count, cpu))
        ours = sample(lambda: ws.dstack("run", "all", "--reload"), runs=bench.sizes.runs)
    xargs = ["bash", "-c", f"seq {count} | xargs -P 2 -I{{}} sleep 0.2"]
    base = sample(lambda: quiet(xargs), runs=bench.sizes.runs)
    return [
        Row(
            "S3",
            f"{count} x sleep 0.2, 2 slots",
            ours,
            baseline=median(base),
            baseline_name="xargs -P 2",
            budget=Budget(1.15, times_baseline=True),
        ),
    ]


def runner_overhead(bench: Bench) -> list[Row]:
    """S3O: the runner's cost per job, between one job's last command and the next one's
    first (its final status, the next claim, checkout, process start): N jobs that each
    take every CPU (so they run one at a time) write a timestamp as their first and last
    command; the row is the median gap."""
    count = bench.sizes.parallel_jobs
    cpu = os.cpu_count() or 2
    gaps: list[float] = []
    with bench.workspace() as ws:
        stamps = ws.root / "stamps"
        ws.workflows(_serial_workflows(count, cpu, stamps))
        for _ in range(bench.sizes.runs):
            stamps.write_text("")
            ws.dstack("run", "all", "--reload")
            gaps += _gaps(stamps.read_text().split())
    return [
        Row(
            "S3O",
            "runner overhead per job",
            [g * 1000 for g in gaps],
            unit="ms",
            budget=Budget(10.0),
        )
    ]


def _serial_workflows(count: int, cpu: int, stamps: Path) -> str:
    stamp = f"date +%s.%N >> {stamps}"
    lines = ["workflows:"]
    for index in range(count):
        lines += [
            f"  - name: job-{index}",
            "    provider: bash",
            f"    commands: ['{stamp}', '{stamp}']",
            f"    resources: {{cpu: {cpu}}}",
        ]
    lines += ["  - name: all", "    provider: bash", "    commands: ['true']", "    deps:"]
    lines += [f"      - workflow: job-{index}" for index in range(count)]
    return "\n".join(lines) + "\n"


def _gaps(stamps: list[str]) -> list[float]:
    """From the jobs' (start, end) pairs in the order written: each start minus the end
    before it."""
    times = sorted(float(stamp) for stamp in stamps)
    if len(times) % 2:
        raise BenchError(f"odd number of timestamps: {len(times)}")
    return [times[i] - times[i - 1] for i in range(2, len(times), 2)]


def _parallel_workflows(count: int, cpu: int) -> str:
    lines = ["workflows:"]
    for index in range(count):
        lines += [
            f"  - name: sleep-{index}",
            "    provider: bash",
            "    commands: [sleep 0.2]",
            f"    resources: {{cpu: {cpu}}}",
        ]
    lines += ["  - name: all", "    provider: bash", "    commands: ['true']", "    deps:"]
    lines += [f"      - workflow: sleep-{index}" for index in range(count)]
    return "\n".join(lines) + "\n"
