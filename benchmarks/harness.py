"""Timing and reporting: samples after a warm-up, budgets, and the result table.

A scenario returns `Row`s. A row holds the samples of one measured quantity, the baseline
measured in the same run (when there is one) and the budget it is held to.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Action = Callable[[], object]


def sample(
    action: Action,
    *,
    runs: int,
    setup: Action | None = None,
    warmup: int = 1,
    settle_disk: bool = False,
) -> list[float]:
    """Seconds of `action` for each of `runs` runs, after `warmup` untimed runs.

    `setup` (untimed) runs before every run, warm-ups included; `settle_disk` as for
    `sample_in_turn`.
    """
    timed = sample_in_turn({"": (action, setup)}, runs=runs, warmup=warmup, settle_disk=settle_disk)
    return timed[""]


def sample_in_turn(
    works: Mapping[str, tuple[Action, Action | None]],
    *,
    runs: int,
    warmup: int = 1,
    settle_disk: bool = False,
) -> dict[str, list[float]]:
    """Seconds of each (action, setup) of `works`, sampled in turn: `warmup` untimed rounds,
    then `runs` rounds of one sample of each. Side by side, they meet the same state of the
    machine (its load, its disk), so their ratio holds where samples taken one block after
    another would drift apart.

    `setup` (untimed) runs before each sample of its action. With `settle_disk`, the disk's
    write-back is flushed (`sync`, untimed) before each sample, so that none pays for what
    the one before it (or a setup) wrote: on a disk slower than the page cache, the
    write-back of one sample's gigabyte otherwise lands in whichever sample comes next.
    """
    results: dict[str, list[float]] = {name: [] for name in works}
    for index in range(warmup + runs):
        for name, (action, setup) in works.items():
            if setup is not None:
                setup()
            if settle_disk:
                os.sync()
            start = time.perf_counter()
            action()
            if index >= warmup:
                results[name].append(time.perf_counter() - start)
    return results


@dataclass(frozen=True)
class Budget:
    """`limit` is a ceiling (lower is better) unless `at_least`; `over_baseline` adds the
    row's baseline to it (S8: at most `docker run` + 0.3 s); `times_baseline` multiplies
    the baseline by it (S3: at most 1.15 x `xargs -P 2`;
    a peer: at least 2x dstack's time)."""

    limit: float
    at_least: bool = False
    over_baseline: bool = False
    times_baseline: bool = False

    def bound(self, baseline: float | None) -> float:
        if self.times_baseline:
            return self.limit * (baseline or 0.0)
        return self.limit + (baseline or 0.0) if self.over_baseline else self.limit

    def met(self, value: float, baseline: float | None) -> bool:
        bound = self.bound(baseline)
        return value >= bound if self.at_least else value <= bound

    def describe(self, unit: str) -> str:
        sign = ">=" if self.at_least else "<="
        if self.times_baseline:
            return f"{sign} {_number(self.limit)}x baseline"
        base = "baseline + " if self.over_baseline else ""
        return f"{sign} {base}{_number(self.limit)} {unit}".replace("  ", " ")


@dataclass
class Row:
    """One measured quantity. `samples` are in `unit` (seconds unless stated otherwise)."""

    scenario: str
    name: str
    samples: list[float]
    unit: str = "s"
    baseline: float | None = None
    baseline_name: str = ""
    budget: Budget | None = None
    errors: int = 0
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def ratio(self) -> float | None:
        if not self.baseline:
            return None
        return self.median / self.baseline

    @property
    def passed(self) -> bool | None:
        """None when the row has no budget; errors (lost lines, failed requests) miss it."""
        if self.budget is None:
            return None
        return self.errors == 0 and self.budget.met(self.median, self.baseline)

    def as_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "name": self.name,
            "unit": self.unit,
            "median": self.median,
            "min": min(self.samples),
            "max": max(self.samples),
            "samples": self.samples,
            "baseline": self.baseline,
            "baseline_name": self.baseline_name,
            "ratio": self.ratio,
            "budget": self.budget.describe(self.unit) if self.budget else None,
            "passed": self.passed,
            "errors": self.errors,
            "note": self.note,
            **self.extra,
        }


def skipped(scenario: str, name: str, why: str) -> Row:
    """A row for a scenario that could not run here (no Docker engine, say)."""
    return Row(scenario, name, [float("nan")], note=f"skipped: {why}")


HEADERS = ("scenario", "median", "min-max", "baseline", "ratio", "budget", "result")


def table(rows: list[Row]) -> str:
    """The rows as a Markdown table (readable in a terminal, pastable into the README)."""
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + " --- |" * len(HEADERS)]
    for row in rows:
        lines.append("| " + " | ".join(_cells(row)) + " |")
    notes = [f"- {row.scenario} {row.name}: {row.note}" for row in rows if row.note]
    return "\n".join(lines + (["", *notes] if notes else []))


def _cells(row: Row) -> list[str]:
    title = f"{row.scenario} {row.name}"
    if row.note.startswith("skipped"):
        return [title, "-", "-", "-", "-", "-", "skipped"]
    span = f"{_number(min(row.samples))}-{_number(max(row.samples))}"
    base = f"{_number(row.baseline)} ({row.baseline_name})" if row.baseline else "-"
    ratio = f"{row.ratio:.2f}x" if row.ratio is not None else "-"
    budget = row.budget.describe(row.unit) if row.budget else "-"
    result = {None: "-", True: "pass", False: "MISS"}[row.passed]
    if row.errors:
        result += f" ({row.errors} errors)"
    return [title, f"{_number(row.median)} {row.unit}", span, base, ratio, budget, result]


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}"


def median(values: list[float]) -> float:
    return statistics.median(values)


def quiet(command: list[str], **kwargs: Any) -> None:
    """Run `command` to its end, output discarded; a failure raises."""
    import subprocess

    subprocess.run(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, **kwargs
    )
