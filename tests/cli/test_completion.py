"""Shell completion through click's real protocol: `dstack` run with `_DSTACK_COMPLETE`,
`COMP_WORDS` and `COMP_CWORD`, as bash's completion function runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from tests.e2e.conftest import Env, _stop_server, make_env
from tests.e2e.remote_helpers import free_port


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = make_env(tmp_path, "process")
    e.workflows(
        """
        workflows:
          - name: prepare
            provider: bash
            commands: [echo prepared]
          - name: train
            provider: bash
            commands: [echo trained]
        """
    )
    e.commit("workflows")
    try:
        yield e
    finally:
        _stop_server(e.home)


def complete(env: Env, line: str) -> list[str]:
    """What completing the last word of `line` offers (`line` ends with a space: a new word)."""
    words = line.split()
    cword = len(words) if line.endswith(" ") else len(words) - 1
    proc = subprocess.run(
        [sys.executable, "-m", "dstack"],
        cwd=env.repo,
        env={
            **env.environ(),
            "_DSTACK_COMPLETE": "bash_complete",
            "COMP_WORDS": line,
            "COMP_CWORD": str(cword),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc
    assert proc.stderr == "", proc.stderr
    return [row.split(",", 1)[1] for row in proc.stdout.splitlines() if row]


def _server_started(env: Env) -> bool:
    return (env.home / "server" / "server.json").exists()


def test_workflows_complete_without_a_server(env: Env) -> None:
    assert complete(env, "dstack run ") == ["prepare", "train"]
    assert complete(env, "dstack run tr") == ["train"]
    assert complete(env, "dstack plan p") == ["prepare"]
    assert complete(env, "dstack prune cache t") == ["train"]
    assert complete(env, "dstack ps ") == []  # runs: no local server runs, none is started
    assert not _server_started(env)


def test_runs_and_tags_complete_from_the_running_local_server(env: Env) -> None:
    assert env.dstack("run", "train").code == 0
    name = json.loads(env.dstack("ps", "--json").out)[0]["name"]
    assert env.dstack("tags", "add", "best", name).code == 0

    assert complete(env, "dstack logs ") == [name]
    assert complete(env, f"dstack stop {name[:3]}") == [name]
    assert complete(env, "dstack ls ") == [name]
    assert complete(env, "dstack cp :") == [":best"]
    assert complete(env, "dstack tags delete ") == ["best"]
    assert complete(env, "dstack logs zzz") == []


def test_remotes_complete_and_an_unreachable_remote_completes_no_run(env: Env) -> None:
    config = {
        "remotes": [
            {"name": "team", "url": f"http://127.0.0.1:{free_port()}", "token": "t"},
            {"name": "gpu", "url": f"http://127.0.0.1:{free_port()}", "token": "t"},
        ],
        "default": "team",
    }
    env.home.mkdir(parents=True, exist_ok=True)
    (env.home / "config.yaml").write_text(yaml.safe_dump(config))

    assert complete(env, "dstack logs --remote ") == ["team", "gpu"]
    assert complete(env, "dstack logs --remote g") == ["gpu"]
    assert complete(env, "dstack config --delete ") == ["team", "gpu"]
    assert complete(env, "dstack logs --remote team ") == []
    assert not _server_started(env)


def test_command_names_still_complete(env: Env) -> None:
    assert complete(env, "dstack wor") == ["workflows"]
    assert "status" in complete(env, "dstack server ")
