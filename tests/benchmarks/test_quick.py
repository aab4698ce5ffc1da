"""The benchmark harness keeps working: `python -m benchmarks --quick` runs every scenario
through the real CLI and prints its table. No timing is asserted here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _harness(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:  # type: ignore[type-arg]
    out = tmp_path / "out.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            "--json",
            str(out),
            "--dir",
            str(tmp_path),
            *args,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, json.loads(out.read_text())


def test_quick_mode_measures_every_process_scenario(tmp_path: Path) -> None:
    proc, data = _harness(tmp_path, "--only", "S0,S1,S2,S3,S3O,S4,S5,S6,S7,S9,S10")

    scenarios = {row["scenario"] for row in data["rows"]}
    assert scenarios == {"S0", "S1", "S2a", "S2b", "S3", "S3O", "S4", "S5", "S6", "S7", "S9", "S10"}
    assert data["broken"] == []
    assert "| scenario | median | min-max | baseline | ratio | budget | result |" in proc.stdout
    for row in data["rows"]:
        assert row["median"] > 0, row
        assert row["errors"] == 0, row  # no log line lost, no API request failed
    assert not list(tmp_path.glob("dstack-bench-*")), "workspaces are removed at the end"


@pytest.mark.postgres
def test_quick_mode_measures_the_server_scenarios_on_postgresql(tmp_path: Path) -> None:
    _, data = _harness(tmp_path, "--only", "S7,S9,S10", "--db", "postgres")

    assert data["broken"] == []
    assert {row["scenario"] for row in data["rows"]} == {"S7", "S9", "S10"}
    for row in data["rows"]:
        assert "postgres" in row["name"], row
        assert row["median"] > 0, row
        assert row["errors"] == 0, row
    sizes = [row for row in data["rows"] if row["name"].startswith("database size")]
    assert len(sizes) == 1
    assert "10,000 jobs" in sizes[0]["note"]


@pytest.mark.docker
def test_quick_mode_measures_the_docker_executor(tmp_path: Path) -> None:
    _, data = _harness(tmp_path, "--only", "S8")

    (row,) = data["rows"]
    assert row["scenario"] == "S8"
    assert row["note"] == "", row["note"]  # not skipped: the engine and image are there
    assert row["median"] > row["baseline"] > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--only", "S1,S42"],
            "unknown scenario S42; known: S0, S0', S0I, S1, S2, S3, S3O, S4, S5, S6, S7, S8, S9, "
            "S10",
        ),
        (
            ["--only", "S10", "--db", "sqlite,oracle"],
            "unknown database oracle; known: sqlite, postgres",
        ),
    ],
)
def test_an_unknown_name_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )

    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"benchmarks: {message}"]
