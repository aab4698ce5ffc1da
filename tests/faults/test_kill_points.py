"""Kill the runner, the server or the CLI with SIGKILL at seeded points of a job, then check
what a user sees once the processes are back:

- the run reaches a final state within a bound (`FINAL_BOUND`);
- every line the job printed before the kill that the runner's spool held is in
  `dstack logs` exactly once, in order, and no line of the job is there twice;
- every file the job had finished writing before the kill is listed by `dstack ls` and its
  bytes, copied out with `dstack cp`, are the ones written; no listed file is corrupt;
- a kill of the server or of the CLI costs the job nothing: it ends `done` with all its output.

CI runs `CI_SEED` (`POINTS` kill points, every target at every phase at least once);
`pytest tests/faults --faults-sweep N` runs seeds 0..N-1 (see docs/faults.md).
"""

from __future__ import annotations

import random
import re
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.e2e.remote_helpers import wait_until
from tests.faults.conftest import (
    ARTIFACTS,
    STEP_PAUSE,
    STEPS,
    TOPOLOGIES,
    Team,
    numbered,
    step_bytes,
)

from dstack.models.job import JobStatus

CI_SEED = 14
CLI_PHASES = 3
"""A killed CLI changes nothing for the runner: a few phases are enough for each seed."""
SWEEP_EXTRA = 15
"""Random kill points a sweep adds to each seed's stratified ones."""
TARGETS = ("runner", "server", "cli")
PHASES = ("claim", "checkout", "deps", "running", "sync", "upload", "final")
HOOKED = {"claim", "checkout", "deps", "sync", "upload", "final"}
"""Phases reached through a pause point of the runner; `running` is reached by polling the
job's spool for one of its lines."""
REACH_BOUND = 45.0

_STEP_FILE = re.compile(r"^step-(\d+)\.txt$")


@dataclass(frozen=True)
class KillPoint:
    seed: int
    index: int
    topology: str
    target: str
    phase: str
    step: int
    """`running`: the kill comes once the job printed `wrote <step>`, `delay` seconds later."""
    delay: float

    @property
    def id(self) -> str:
        where = f"{self.phase}@{self.step}" if self.phase == "running" else self.phase
        return f"seed{self.seed}-{self.index:02d}-{self.topology}-{self.target}-{where}"


def kill_points(seed: int, extra: int = 0) -> list[KillPoint]:
    """The kill points of `random.Random(seed)`: the runner and the server of each topology at
    every phase, the CLI (of a random topology) at `CLI_PHASES` random phases, shuffled; then
    `extra` random ones."""
    rng = random.Random(seed)
    picks = [(w, t, p) for w in TOPOLOGIES for t in ("runner", "server") for p in PHASES]
    picks += [(rng.choice(TOPOLOGIES), "cli", p) for p in rng.sample(PHASES, CLI_PHASES)]
    rng.shuffle(picks)
    picks += [
        (rng.choice(TOPOLOGIES), rng.choice(TARGETS), rng.choice(PHASES)) for _ in range(extra)
    ]
    return [
        KillPoint(seed, i, *pick, rng.randint(1, STEPS - 1), round(rng.uniform(0, STEP_PAUSE), 3))
        for i, pick in enumerate(picks)
    ]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "point" not in metafunc.fixturenames:
        return
    sweep: int = metafunc.config.getoption("--faults-sweep")
    points = (
        [p for seed in range(sweep) for p in kill_points(seed, SWEEP_EXTRA)]
        if sweep > 0
        else kill_points(CI_SEED)
    )
    points.sort(key=lambda p: p.topology)  # one team of each topology at a time
    metafunc.parametrize(
        ("team", "point"),
        [(p.topology, p) for p in points],
        ids=[p.id for p in points],
        indirect=["team"],
        scope="module",
    )


def test_kill_points_cover_every_target_at_every_phase() -> None:
    points = kill_points(CI_SEED)
    assert len(points) >= 30
    assert {p.target for p in points} == set(TARGETS)
    for topology in TOPOLOGIES:
        for target in ("runner", "server"):
            phases = {p.phase for p in points if (p.topology, p.target) == (topology, target)}
            assert phases == set(PHASES), (topology, target)
    assert kill_points(CI_SEED) == points  # the seed alone decides


@dataclass
class Killed:
    run_name: str
    job_id: str
    spool: str
    """What the runner's spool held right after the kill."""


def test_kill_point(fault_team: Team, point: KillPoint, tmp_path: Path) -> None:
    team = fault_team
    killed = _inject(team, point)
    team.hooks.release()
    team.revive()

    run = team.wait_final(killed.run_name)

    logs = _check_logs(team, killed)
    files = _check_artifacts(team, killed, tmp_path / "copy")
    if point.target != "runner":
        status = run.status
        assert status is JobStatus.DONE, f"{point.id}: the run ended {_fate(run)}"
        assert Counter(numbered(logs)) == Counter(_all_lines()), f"{point.id}: lines lost"
        assert "seed of base1" in logs, logs
        assert "seed of base2" in logs, logs
        every = set(range(1, STEPS + 1))
        assert files == dict.fromkeys(ARTIFACTS, every), f"{point.id}: artifacts lost"


def _inject(team: Team, point: KillPoint) -> Killed:
    """Start a run, reach the point, kill the target there."""
    cli: subprocess.Popen[str] | None = None
    if point.phase in HOOKED:
        team.hooks.open(point.phase)
    if point.target == "cli":
        before = team.newest_run()
        cli = team.attach()
        wait_until(lambda: team.newest_run() not in (None, before), REACH_BOUND, "the run")
        name = team.newest_run()
        assert name is not None
    else:
        name = team.submit()
    try:
        job_id = _reach(team, point, name)
    except BaseException:
        if cli is not None:
            cli.kill()
            cli.communicate(timeout=10)
        raise
    if point.target == "runner":
        team.kill_runner()
    elif point.target == "server":
        team.kill_server()
    else:
        assert cli is not None
        assert cli.poll() is None, f"the attached CLI ended early: {cli.communicate()}"
        cli.kill()
        cli.communicate(timeout=10)
    return Killed(name, job_id, team.spool(job_id))


def _reach(team: Team, point: KillPoint, name: str) -> str:
    """Wait until the run's job is at the point; its id."""
    if point.phase in HOOKED:
        found: list[str] = []

        def paused() -> bool:
            job_id = team.hooks.reached(point.phase)
            if job_id is not None:
                found.append(job_id)
            return job_id is not None

        wait_until(paused, REACH_BOUND, f"{name} at {point.phase}")
        return found[0]
    job_id = _job_id(team, name)
    wanted = ("wrote", point.step)
    wait_until(
        lambda: wanted in numbered(team.spool(job_id)), REACH_BOUND, f"{name} at step {point.step}"
    )
    time.sleep(point.delay)
    return job_id


def _job_id(team: Team, name: str) -> str:
    ids: list[str] = []

    def known() -> bool:
        run = team.run(name)
        if run is not None and run.jobs:
            ids.append(run.jobs[0].id)
        return bool(ids)

    wait_until(known, REACH_BOUND, f"the job of {name}")
    return ids[0]


def _all_lines() -> list[tuple[str, int]]:
    return [(kind, n) for n in range(1, STEPS + 1) for kind in ("line", "wrote")]


def _check_logs(team: Team, killed: Killed) -> str:
    """`dstack logs`: each of the job's lines at most once, in order, and every line the
    spool held at the kill there."""
    result = team.dstack("logs", killed.run_name)
    assert result.code == 0, result
    shown = numbered(result.out)
    twice = [line for line, count in Counter(shown).items() if count > 1]
    assert not twice, f"duplicated log lines {twice} in {killed.run_name}:\n{result.out}"
    assert shown == sorted(shown, key=_all_lines().index), f"out of order:\n{result.out}"
    held = numbered(killed.spool)
    missing = [line for line in held if line not in shown]
    assert not missing, (
        f"lines the runner's spool held at the kill are missing from `dstack logs "
        f"{killed.run_name}`: {missing}\n--- shown\n{result.out}"
    )
    return result.out


def _check_artifacts(team: Team, killed: Killed, copy: Path) -> dict[str, set[int]]:
    """Every file the job had written before the kill is listed and verifies; every file
    that is listed verifies. The numbers of the listed files, per artifact."""
    written = {n for kind, n in numbered(killed.spool) if kind == "wrote"}
    listing = team.dstack("ls", killed.run_name, "-r")
    assert listing.code == 0, listing
    listed = {
        folder: {int(n) for n in re.findall(rf"{folder}/step-(\d+)\.txt", listing.out)}
        for folder in ARTIFACTS
    }
    for folder in ARTIFACTS:
        unlisted = sorted(f"{folder}/step-{n}.txt" for n in written - listed[folder])
        assert not unlisted, (
            f"files written before the kill are not listed by `dstack ls {killed.run_name}`: "
            f"{unlisted}\n{listing.out}"
        )
    if any(listed.values()):
        _verify_copy(team, killed.run_name, copy, listed)
    return listed


def _verify_copy(team: Team, run_name: str, copy: Path, listed: dict[str, set[int]]) -> None:
    """`dstack cp RUN . COPY` (every artifact at once) copies what `ls` listed, byte-exact."""
    copied = team.dstack("cp", run_name, ".", str(copy))
    assert copied.code == 0, copied
    for folder in ARTIFACTS:
        contents = {}
        for path in (copy / folder).iterdir() if (copy / folder).exists() else []:
            match = _STEP_FILE.match(path.name)
            assert match, f"unexpected artifact file {folder}/{path.name}"
            contents[int(match.group(1))] = path.read_bytes()
        assert set(contents) == listed[folder], (
            f"`cp` copied {sorted(contents)} of {folder}, `ls` listed {sorted(listed[folder])}"
        )
        corrupt = [
            f"{folder}/step-{n}.txt" for n, data in contents.items() if data != step_bytes(n)
        ]
        assert not corrupt, f"artifact bytes differ from what the job wrote: {corrupt}"


def _fate(run: object) -> str:
    jobs = getattr(run, "jobs", [])
    return ", ".join(f"{j.status} ({j.reason}: {j.message})" for j in jobs) or str(run)
