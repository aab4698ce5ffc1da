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


def test_config_lists_remotes_as_json_without_their_tokens(process_env: Env) -> None:
    env = process_env
    empty = env.dstack("config", "--json")
    env.home.mkdir(parents=True, exist_ok=True)
    (env.home / "config.yaml").write_text(
        "default: team\nremotes:\n"
        "  - {name: team, url: 'http://team:3000', token: secret-team-token-0123}\n"
        "  - {name: lab, url: 'http://lab:3000', token: secret-lab-token-0123}\n"
    )
    listed = env.dstack("config", "--json")

    assert (empty.code, json.loads(empty.out)) == (0, [])
    assert listed.code == 0, listed
    assert json.loads(listed.out) == [
        {"name": "team", "url": "http://team:3000", "default": True},
        {"name": "lab", "url": "http://lab:3000", "default": False},
    ]
    assert "secret" not in listed.out


# Commands that talk to no server: the remotes file, the server itself and the local one, the
# repository's files.
LOCAL_ONLY = {"config", "server", "server status", "server stop", "workflows"}
LISTINGS = {
    "backends list", "config", "logs", "ls", "offers", "plan", "ps", "runners",
    "secrets list", "server status", "tags list", "users list", "workflows",
}  # fmt: skip


def _commands() -> list[str]:
    """Every command the CLI has, as `dstack --help` and each group's `--help` list them."""
    found = []
    groups = [""]
    while groups:
        group = groups.pop()
        shown = _help(group)
        listed = shown.split("\nCommands:\n", 1)
        if group and (len(listed) == 1 or "[COMMAND]" in shown.splitlines()[0]):
            found.append(group)  # a command, or a group that does something alone
        if len(listed) == 2:
            rows = listed[1].split("\n\n", 1)[0].splitlines()
            names = [row.split()[0] for row in rows if row.startswith("  ") and row[2] != " "]
            groups += [f"{group} {name}".strip() for name in names]
    return sorted(found)


def _help(command: str) -> str:
    # Imported here: the CLI in this process (each `--help` a subprocess would cost ~0.3 s).
    from click.testing import CliRunner

    from dstack.cli.main import cli

    result = CliRunner().invoke(cli, [*command.split(), "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, (command, result.output)
    return result.output


def test_every_command_that_talks_to_a_server_takes_remote_and_each_listing_json() -> None:
    commands = _commands()
    without_remote = {c for c in commands if "--remote" not in _help(c)}
    without_json = {c for c in LISTINGS if "--json" not in _help(c)}

    assert {"run", "plan", "stop", "ps", "runners", "users list"} <= set(commands)
    assert without_remote == LOCAL_ONLY
    assert without_json == set()
