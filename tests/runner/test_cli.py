from __future__ import annotations

import subprocess
import sys

import pytest

from dstack.errors import ConfigError
from dstack.runner.cli import parse_labels


def test_labels_parse_into_a_dict() -> None:
    assert parse_labels("zone=lab, gpu=a100") == {"zone": "lab", "gpu": "a100"}
    assert parse_labels(None) == {}


def test_a_label_without_equals_is_one_clear_error() -> None:
    with pytest.raises(ConfigError, match="invalid label 'zone' in --labels"):
        parse_labels("zone")


def test_python_m_dstack_runner_start_shows_its_options() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dstack.runner", "start", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0
    for option in ("--server", "--token", "--name", "--work-dir", "--executor", "--labels"):
        assert option in result.stdout


def test_bad_labels_print_one_line_and_exit_1(tmp_path: object) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dstack.runner",
            "start",
            "--server",
            "http://127.0.0.1:9",
            "--token",
            "t",
            "--labels",
            "oops",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == "error: invalid label 'oops' in --labels"
    assert "Traceback" not in result.stderr
