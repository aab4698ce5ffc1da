"""`python -m benchmarks --peers ...` parses its option and skips a peer it cannot install.

No real peer is installed here (too slow for CI, and it needs the package index): pip is
pointed at an index on a closed local port, so every install fails at once. No timing is
asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _benchmarks(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_help_lists_the_peers_option() -> None:
    proc = _benchmarks("--help")

    assert proc.returncode == 0, proc.stderr
    assert "--peers" in proc.stdout
    assert "dvc,snakemake,metaflow" in proc.stdout


def test_peers_parse_and_compare_only_s1_to_s5() -> None:
    # Parsed (names in any case, spaces, repeats) and then refused for S6: nothing runs.
    proc = _benchmarks("--peers", " DVC, snakemake,dvc ", "--only", "S1,S6")

    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "benchmarks: --peers compares S1, S2, S3, S4, S5 only, not S6"
    ]


def test_an_unknown_peer_is_one_line_and_exit_2() -> None:
    proc = _benchmarks("--peers", "dvc,airflow")

    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "benchmarks: unknown peer airflow; known: dvc, snakemake, metaflow"
    ]
    assert proc.stdout == ""


def test_a_peer_that_cannot_be_installed_is_skipped_with_a_note(tmp_path: Path) -> None:
    env = dict(os.environ)
    env.update(
        PIP_CONFIG_FILE=os.devnull,  # none of this machine's pip configuration
        PIP_INDEX_URL="http://127.0.0.1:9/simple",  # the discard port: nothing listens
        PIP_FIND_LINKS=str(tmp_path / "no-wheels"),
        PIP_RETRIES="0",
    )
    (tmp_path / "no-wheels").mkdir()
    out = tmp_path / "out.json"

    proc = _benchmarks(
        "--quick",
        "--peers",
        "metaflow",
        "--only",
        "S1",
        "--dir",
        str(tmp_path),
        "--json",
        str(out),
        env=env,
        timeout=240,
    )

    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    (note,) = data["peers_skipped"]
    assert note.startswith("metaflow skipped: pip install metaflow failed: ")
    assert "\n" not in note
    assert f"- {note}" in proc.stdout.splitlines()
    # dstack's own row is still measured; the peer has none.
    assert [(row["scenario"], row["name"]) for row in data["rows"]] == [
        ("S1", "one step, echo hello: dstack")
    ]
    assert data["rows"][0]["median"] > 0
    assert data["broken"] == []
    assert not list(tmp_path.glob("dstack-bench-*")), "workspaces are removed at the end"
    assert not list(tmp_path.glob("dstack-peers-*")), "peer venvs are removed at the end"
