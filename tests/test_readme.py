"""README.md stays true: its command table names only commands and options that exist, and
its first command (the example pipeline) runs as written, with the process executor."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from dstack.cli.main import COMMANDS, cli
from dstack.server.local import stop_local_server

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
OPTION = re.compile(r"(?<![\w-])(--?[a-zA-Z][\w-]*)")


def _table_commands() -> list[str]:
    """The first cell of each row of the command table: `dstack ps [-a] ... [--json]`."""
    rows = re.findall(r"^\| `(dstack [^`]+)` \|", README, flags=re.MULTILINE)
    return [row.replace("\\|", "|") for row in rows]


def _helps(command: click.Command, path: list[str]) -> str:
    """The `--help` of a command and of all its subcommands, together."""
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    text = result.output
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            text += _helps(sub, [*path, name])
    return text


@pytest.mark.parametrize("row", _table_commands())
def test_each_command_of_the_table_exists_with_its_options(row: str) -> None:
    name = row.split()[1]
    assert name in COMMANDS, f"README names `dstack {name}`, which does not exist"
    command = cli.get_command(click.Context(cli), name)
    assert command is not None
    helps = _helps(command, [name])
    missing = [o for o in OPTION.findall(row) if o not in helps]
    assert not missing, f"`{row}`: no option {missing} in `dstack {name} --help`"


def _names(row: str) -> list[str]:
    """`dstack push | pull (RUN | :TAG)` → push, pull."""
    words = row.split()
    names = [words[1]]
    while len(words) > len(names) * 2 + 1 and words[len(names) * 2] == "|":
        names.append(words[len(names) * 2 + 1])
    return names


def test_the_table_lists_every_command() -> None:
    listed = {name for row in _table_commands() for name in _names(row)}
    assert set(COMMANDS) - listed <= {"aws"}  # `aws configure` is told in "Cloud backends"


@pytest.fixture
def hello(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """examples/hello as a git repository of its own, and a dstack home for it."""
    repo = tmp_path / "hello"
    shutil.copytree(ROOT / "examples" / "hello", repo)
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "hello"]):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)
    home = tmp_path / "home"
    env = {**os.environ, "DSTACK_HOME": str(home), "DSTACK_EXECUTOR": "process"}
    try:
        yield repo, env
    finally:
        stop_local_server(home)


def test_the_first_command_runs_the_example_pipeline(hello: tuple[Path, dict[str, str]]) -> None:
    repo, env = hello
    first = re.search(r"```sh\n# 1\..*\n(.+)\n", README)
    assert first, "README's first command moved"
    steps = [s.strip() for s in first.group(1).split("&&")]
    assert steps[:2] == ["pip install .", "cd examples/hello"], steps  # installed already
    words = steps[2].split()
    assert words[0] == "dstack"

    result = subprocess.run(
        [sys.executable, "-m", "dstack", *words[1:]],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )

    assert result.returncode == 0, result
    assert "epoch 5/5" in result.stdout
    assert "saved model/weights.txt" in result.stdout
