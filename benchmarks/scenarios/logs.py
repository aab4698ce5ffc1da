"""S6: a job printing many lines; time until `dstack logs` has returned all of them.

Timed from `dstack run -d` start to the end of `dstack logs -f RUN`, which follows the log
until the run ends. The output is checked line by line: every line, in order.
"""

from __future__ import annotations

import subprocess
import time

from benchmarks.harness import Budget, Row
from benchmarks.scenarios.base import Bench
from benchmarks.workspace import BenchError, Workspace, dstack_command


def million_lines(bench: Bench) -> list[Row]:
    count = bench.sizes.log_lines
    rates: list[float] = []
    lost = 0
    with bench.workspace() as ws:
        ws.workflows(
            f"""
            workflows:
              - name: print
                provider: bash
                commands: [seq 1 {count}]
            """
        )
        for index in range(bench.sizes.runs + 1):
            seconds, missing = _one(ws, count)
            if index:  # the first is the warm-up
                rates.append(count / seconds)
                lost += missing
    return [
        Row(
            "S6",
            f"{count:,} log lines, end to end",
            rates,
            unit="lines/s",
            budget=Budget(200_000, at_least=True),
            errors=lost,
            note=f"{lost} lines lost or out of order" if lost else "",
        ),
    ]


def _one(ws: Workspace, count: int) -> tuple[float, int]:
    """Seconds until every line was returned, and how many were missing or out of order."""
    start = time.perf_counter()
    run = ws.submit("print")
    proc = subprocess.run(
        [*dstack_command(), "logs", "-f", run],
        cwd=ws.repo,
        env=ws.environ(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=False,
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise BenchError(f"dstack logs -f {run} exited {proc.returncode}: {proc.stderr[-500:]!r}")
    lines = proc.stdout.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    in_order = sum(1 for i, line in enumerate(lines) if line == str(i + 1).encode())
    return seconds, count - in_order
