"""The scenarios of `python -m benchmarks`, by id. Each takes a `Bench`, returns rows."""

from __future__ import annotations

from benchmarks.scenarios import api, docker, logs, runs, scale, scheduler, startup, storage
from benchmarks.scenarios.base import Bench, Scenario, Sizes

SCENARIOS: dict[str, Scenario] = {
    "S0": startup.help_startup,
    "S0'": startup.cold_start,
    "S0I": startup.idle_cost,
    "S1": runs.one_step,
    "S2": runs.chain,
    "S3": runs.parallel,
    "S3O": runs.runner_overhead,
    "S4": storage.big_file,
    "S5": storage.many_files,
    "S6": logs.million_lines,
    "S7": scheduler.assignments,
    "S8": docker.docker_run,
    "S9": api.concurrent_clients,
    "S10": scale.scale,
}

__all__ = ["SCENARIOS", "Bench", "Scenario", "Sizes"]
