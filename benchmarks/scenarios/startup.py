"""S0: `dstack --help` against `python -c pass` (interpreter start-up is the floor).
S0': the first `dstack run` of the day, no local server yet, against a warm one.
S0I: what an idle local server and its runner cost."""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

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
            # the CLI's command server leaves when idle, as the local server does
            ws.stop_command_server()

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


def idle_cost(bench: Bench) -> list[Row]:
    """S0I: the CPU an idle local server, its runner and the CLI's command server use
    together, in % of one core, from 20 s after a job ran (2 s with `--quick`), over 120 s
    (10 s): every thread's CPU time from the kernel's `schedstat`, in nanoseconds (psutil's
    per-process times tick in 10 ms, too coarse for a few milliseconds a minute)."""
    from dstack.server.local import local_runner_pid, read_local_server

    quick = bench.sizes.runs <= 1
    seconds, settle = (10.0, 2.0) if quick else (120.0, 20.0)
    with bench.workspace() as ws:
        ws.workflows(HELLO)
        ws.dstack("run", "hello")
        server = read_local_server(ws.home)
        runner = local_runner_pid(ws.home)
        if server is None or runner is None:
            raise BenchError("no local server or runner to measure")
        pids = [server.pid, runner, *ws.command_server_pids()]
        time.sleep(settle)
        before = _cpu_ns(pids)
        time.sleep(seconds)
        used = _cpu_ns(pids) - before
    return [
        Row(
            "S0I",
            "idle local server + runner + command server",
            [100 * used / 1e9 / seconds],
            unit="%",
            budget=Budget(0.1),
        )
    ]


def _cpu_ns(pids: list[int]) -> int:
    """CPU time of every live thread of `pids`, in nanoseconds."""
    total = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                total += int((task / "schedstat").read_text().split()[0])
    return total
