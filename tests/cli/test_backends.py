"""`dstack backends`, `dstack aws configure` and `dstack offers` through the real `dstack`
command, against a server in this process whose backends are in-memory twins."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
import yaml
from tests.server.backend_twins import SECRET, Twins

from dstack.server.app import create_app
from dstack.server.settings import ServerSettings

ADMIN_TOKEN = "admin-token-for-backends"


@dataclass
class Team:
    url: str
    home: Path
    twins: Twins

    def dstack(
        self, *args: str, input: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        # AWS variables of the test session (moto's) must not leak into what the CLI sends.
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        full_env.update({"DSTACK_HOME": str(self.home), **(env or {})})
        return subprocess.run(
            [sys.executable, "-m", "dstack", *args],
            input=input,
            capture_output=True,
            text=True,
            env=full_env,
            timeout=60,
        )

    def add_remote(self, name: str, token: str, *, default: bool = False) -> None:
        path = self.home / "config.yaml"
        data = yaml.safe_load(path.read_text()) if path.exists() else {"remotes": []}
        data["remotes"].append({"name": name, "url": self.url, "token": token})
        if default or not data.get("default"):
            data["default"] = name
        self.home.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(data))


@pytest.fixture
def team(tmp_path: Path) -> Iterator[Team]:
    """A server on a loopback port, in a thread, with the admin's remote as the default."""
    twins = Twins()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    settings = ServerSettings(
        home=tmp_path / "server", token=ADMIN_TOKEN, port=sock.getsockname()[1]
    )
    app = create_app(settings, compute_factory=twins)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "test server did not start"
    team = Team(settings.url, tmp_path / "client", twins)
    team.add_remote("team", ADMIN_TOKEN, default=True)
    try:
        yield team
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()


def add_aws(team: Team, *args: str) -> subprocess.CompletedProcess[str]:
    return team.dstack(
        "backends", "add", "aws", "--region", "us-east-1", "--access-key-id", "AKIAEXAMPLE",
        *args, "--remote", env={"AWS_SECRET_ACCESS_KEY": SECRET},
    )  # fmt: skip


def test_add_list_delete(team: Team) -> None:
    added = add_aws(team, "--max-price", "1.5", "--idle-timeout", "10m")
    again = add_aws(team)
    listed = team.dstack("backends", "list", "--remote")
    as_json = team.dstack("backends", "list", "--json", "--remote")

    assert added.returncode == 0, added.stderr
    assert "Backend 'aws' added (aws, us-east-1, credentials: access keys)" in added.stdout
    assert team.twins.built[0].credentials.secret_access_key == SECRET  # from the environment
    assert again.returncode == 1
    assert again.stderr.splitlines()[0] == "Error: backend 'aws' already exists"
    assert listed.returncode == 0
    assert "us-east-1" in listed.stdout
    assert "access keys" in listed.stdout
    assert "$1.5/h" in listed.stdout
    assert "idle 10m" in listed.stdout
    [info] = json.loads(as_json.stdout)
    assert info["config"]["limits"] == {"max_instances": 4, "max_price": 1.5, "idle_timeout": 600.0}
    for result in (added, again, listed, as_json):
        assert SECRET not in result.stdout + result.stderr

    deleted = team.dstack("backends", "delete", "aws", "-y", "--remote")
    missing = team.dstack("backends", "delete", "aws", "-y", "--remote")
    assert (deleted.returncode, deleted.stdout) == (0, "Backend 'aws' deleted.\n")
    assert missing.returncode == 1
    assert "backend 'aws' not found" in missing.stderr
    assert "No backends yet" in team.dstack("backends", "list", "--remote").stdout


def test_refused_credentials_are_one_line_without_the_secret(team: Team) -> None:
    team.twins.refuse.add("aws")

    refused = add_aws(team)

    assert refused.returncode == 1
    lines = refused.stderr.splitlines()
    assert lines[0].startswith("Error: backend 'aws': AWS was not able to validate")
    assert lines[1].startswith("Hint: check the keys or the profile")
    assert "Traceback" not in refused.stderr
    assert SECRET not in refused.stdout + refused.stderr
    assert "No backends yet" in team.dstack("backends", "list", "--remote").stdout


def test_the_secret_key_is_asked_for_hidden_when_not_given(team: Team) -> None:
    result = team.dstack(
        "backends", "add", "aws", "--region", "eu-west-1", "--access-key-id", "AKIA1",
        "--name", "eu", "--remote", input=f"{SECRET}\n",
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert "AWS secret access key" in result.stderr  # getpass asks on the terminal
    assert SECRET not in result.stdout + result.stderr
    assert [t.credentials.secret_access_key for t in team.twins.built] == [SECRET]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--idle-timeout", "5x"], "is not a duration"),
        (["--secret-access-key", "s"], "--secret-access-key needs --access-key-id"),
        (["--profile", "p", "--access-key-id", "k"], "either --access-key-id or --profile"),
        (["--name", "../x"], "invalid backend name"),
        (["--endpoint-url", "ftp://moto"], "is not an http:// or https:// URL"),
    ],
)
def test_bad_options_are_refused_before_asking_the_server(
    team: Team, args: list[str], message: str
) -> None:
    result = team.dstack("backends", "add", "aws", "--region", "us-east-1", *args, "--remote")

    assert result.returncode in (1, 2)
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert team.twins.built == []


def test_aws_configure_asks_and_adds(team: Team) -> None:
    answers = ["us-west-2", "AKIAEXAMPLE", SECRET, "", "subnet-0abc", "", "2",
               "3.5", "15m", "west"]  # fmt: skip

    result = team.dstack("aws", "configure", "--remote", input="\n".join(answers) + "\n")

    assert result.returncode == 0, result.stderr
    assert "AWS region [us-east-1]" in result.stdout
    assert "Most instances at once [4]" in result.stdout
    assert "Backend 'west' added (aws, us-west-2" in result.stdout
    assert SECRET not in result.stdout + result.stderr
    [info] = json.loads(team.dstack("backends", "list", "--json", "--remote").stdout)
    assert info["config"]["subnet"] == "subnet-0abc"
    assert info["config"]["endpoint_url"] is None
    assert info["config"]["limits"] == {"max_instances": 2, "max_price": 3.5, "idle_timeout": 900.0}
    assert team.twins.built[0].credentials.secret_access_key == SECRET


def test_aws_configure_with_the_servers_own_credentials_asks_again_on_a_bad_answer(
    team: Team,
) -> None:
    answers = ["us-east-1", "", "", "", "", "", "", "-3", "", "", ""]

    result = team.dstack("aws", "configure", "--remote", input="\n".join(answers) + "\n")

    assert result.returncode == 0, result.stderr + result.stdout
    assert "Backend 'aws' added (aws, us-east-1, credentials: default)" in result.stdout
    assert result.stdout.count("Most USD per hour per instance") == 2


def test_offers_for_users_cheapest_first(team: Team) -> None:
    assert add_aws(team).returncode == 0
    created = team.dstack("users", "add", "bob", "--remote")
    team.add_remote("bob", created.stdout.splitlines()[-1].strip())

    table = team.dstack("offers", "--gpu", "1", "--spot", "--remote", "bob")
    as_json = team.dstack("offers", "--memory", "16GB", "--on-demand", "--json", "--remote", "bob")
    forbidden = team.dstack("backends", "list", "--remote", "bob")

    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    t4, a100 = (
        next(i for i, line in enumerate(lines) if name in line) for name in ("gpu.t4", "gpu.a100x2")
    )
    assert t4 < a100
    assert "spot" in lines[t4]
    assert "1xT4 (15 GiB)" in lines[t4]
    assert "0.159" in lines[t4]
    assert "Prices as of 2026-11-30 (catalog)." in table.stdout
    offers = json.loads(as_json.stdout)["offers"]
    assert [o["instance_type"] for o in offers] == ["cpu.large", "gpu.t4", "gpu.a100x2"]
    assert offers[1] == {
        "backend": "aws", "region": "us-east-1", "instance_type": "gpu.t4", "cpus": 4,
        "memory_mib": 16384, "gpu_name": "T4", "gpu_memory_mib": 15360, "gpu_count": 1,
        "spot": False, "price": 0.53,
    }  # fmt: skip
    assert forbidden.returncode == 1
    assert "needs an admin token" in forbidden.stderr


def test_offers_without_backends_say_how_to_add_one(team: Team) -> None:
    result = team.dstack("offers", "--remote")

    assert result.returncode == 0
    assert "No backends are configured" in result.stdout


def test_server_public_url_is_checked_before_starting(tmp_path: Path) -> None:
    env = {**os.environ, "DSTACK_HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "dstack", "server", "--public-url", "ftp://example.com"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip

    assert result.returncode == 2
    assert "invalid public URL" in result.stderr
    assert not (tmp_path / "server").exists()
    with_url = ServerSettings(home=tmp_path, public_url="https://dstack.example.com/")
    assert with_url.resolved_public_url() == "https://dstack.example.com"
    assert ServerSettings(home=tmp_path, port=3001).resolved_public_url() == "http://127.0.0.1:3001"
