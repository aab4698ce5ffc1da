"""S0: `dstack --help` against `python -c pass` (interpreter start-up is the floor)."""

from __future__ import annotations

import sys

from benchmarks.harness import Budget, Row, median, quiet, sample
from benchmarks.scenarios.base import Bench
from benchmarks.workspace import dstack_command, user_environ


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
