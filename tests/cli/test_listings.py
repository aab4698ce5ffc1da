"""Listings through the real CLI: `--json` on each (stable field names), artifact names the
same however they are written, sizes in one unit system (IEC)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.e2e.conftest import Env, _stop_server, make_env


@pytest.fixture
def process_env(tmp_path: Path) -> Iterator[Env]:
    e = make_env(tmp_path, "process")
    try:
        yield e
    finally:
        _stop_server(e.home)


def _run_with_artifact(env: Env, declared: str) -> str:
    env.workflows(
        f"""
        workflows:
          - name: train
            help: Train the model.
            provider: bash
            commands:
              - mkdir -p lightning_logs/v0 && printf 'hello' > lightning_logs/v0/a.txt
              - head -c 3000 /dev/zero > lightning_logs/big.bin
            artifacts: ["{declared}"]
        """
    )
    env.commit("workflows")
    result = env.dstack("run", "train")
    assert result.code == 0, result
    runs = json.loads(env.dstack("ps", "--json").out)
    name: str = runs[0]["name"]
    return name


def test_an_artifact_declared_with_dot_slash_is_named_without_it(
    process_env: Env, tmp_path: Path
) -> None:
    env = process_env
    name = _run_with_artifact(env, "./lightning_logs")

    top = env.dstack("ls", name)
    spellings = [
        env.dstack("ls", name, p, "-r").out
        for p in ("./lightning_logs", "lightning_logs/", "lightning_logs")
    ]

    assert top.code == 0, top
    assert "./" not in top.out
    assert top.out.split("\n")[1].split()[0] == "lightning_logs/"
    assert spellings[0] == spellings[1] == spellings[2]
    assert "lightning_logs/v0/a.txt" in spellings[0]
    for index, source in enumerate(("./lightning_logs", "lightning_logs/", "lightning_logs")):
        target = tmp_path / f"copy{index}"
        copied = env.dstack("cp", name, source, str(target))
        assert copied.code == 0, copied
        assert (target / "v0" / "a.txt").read_text() == "hello"


def test_ls_json_and_sizes_in_iec_units(process_env: Env) -> None:
    env = process_env
    name = _run_with_artifact(env, "lightning_logs/")

    top = json.loads(env.dstack("ls", name, "--json").out)
    files = json.loads(env.dstack("ls", name, "-r", "--json").out)
    text = env.dstack("ls", name, "-r", "--total").out

    assert top == [{"path": "lightning_logs", "type": "dir", "size": 3005}]
    assert files == [
        {"path": "lightning_logs/big.bin", "type": "file", "size": 3000},
        {"path": "lightning_logs/v0/a.txt", "type": "file", "size": 5},
    ]
    assert "2.9 KiB" in text
    assert "5 B" in text
    assert "total 2.9 KiB in 2 entries" in text


def test_workflows_json(process_env: Env) -> None:
    env = process_env
    _run_with_artifact(env, "lightning_logs")

    result = env.dstack("workflows", "--json")

    assert result.code == 0, result
    assert json.loads(result.out) == [
        {"name": "train", "provider": "bash", "from": "built-in", "help": "Train the model."}
    ]


def test_secrets_and_users_list_json(process_env: Env) -> None:
    env = process_env
    assert env.dstack("secrets", "add", "HF_TOKEN", "hf-secret-value").code == 0

    secrets = env.dstack("secrets", "list", "--json")
    users = env.dstack("users", "list", "--json")

    assert secrets.code == 0, secrets
    assert "hf-secret-value" not in secrets.out
    (secret,) = json.loads(secrets.out)
    assert set(secret) == {"name", "repo_id", "created_at", "updated_at"}
    assert secret["name"] == "HF_TOKEN"
    assert users.code == 0, users
    assert {"name", "is_admin", "repos", "created_at"} == set(json.loads(users.out)[0])


def test_empty_listings_are_empty_json(process_env: Env) -> None:
    env = process_env
    env.workflows("workflows: []\n")

    assert json.loads(env.dstack("workflows", "--json").out) == []
    assert json.loads(env.dstack("secrets", "list", "--json").out) == []


def test_a_missing_dstack_folder_says_what_to_create(process_env: Env) -> None:
    env = process_env

    result = env.dstack("workflows")

    assert result.code == 1
    assert "dstack init" not in result.err
    hint = result.err.splitlines()[-1]
    assert hint.startswith("Hint: create .dstack/workflows.yaml at the root of your repository")
    example = hint.split("`")[1]  # the example in the hint works as written
    env.write(".dstack/workflows.yaml", example + "\n")
    listed = env.dstack("workflows", "--json")
    assert [w["name"] for w in json.loads(listed.out)] == ["hello"]
