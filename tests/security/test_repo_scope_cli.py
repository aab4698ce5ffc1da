"""Repository scope in the CLI: `dstack ps`, `rm -a`, `tags` work in the current repository;
every repository's is for admins (`--all-repos`), and a non-admin is told so in one line."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from dstack.api.client import Client
from dstack.cli.main import cli
from dstack.cli.scope import current_repo_id
from dstack.errors import DstackError
from dstack.models.job import JobSpec
from dstack.models.protocol import JobSubmission, SubmitRunRequest
from dstack.models.repo import RepoRef
from dstack.models.resources import GpuRequest, ResourcesSpec
from dstack.server.local import ensure_local_server, stop_local_server


@dataclass
class Local:
    home: Path
    client: Client
    a: Path
    b: Path

    def invoke(self, *args: str, cwd: Path) -> Result:
        env = {"DSTACK_HOME": str(self.home), "DSTACK_EXECUTOR": "process"}
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(cwd)
            return CliRunner().invoke(cli, list(args), env=env)

    def stopped_run(self, repo: Path) -> str:
        """A finished (stopped) run of `repo`: its job asks for GPUs no runner has."""
        spec = JobSpec(
            provider="bash",
            commands=["true"],
            resources=ResourcesSpec(gpu=GpuRequest(count=8)),
            workflow_name="train",
        )
        request = SubmitRunRequest(
            repo=RepoRef(repo_id=current_repo_id(repo), tree="0" * 40),
            workflow_name="train",
            jobs=[JobSubmission(workflow_name="train", spec=spec)],
        )
        name = self.client.submit_run(request).name
        self.client.stop_run(name)
        return name


def git_repo(path: Path) -> Path:
    path.mkdir()
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    return path


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Local]:
    home = tmp_path / "home"
    try:
        url, token = ensure_local_server(home, start_runner=False)
        with Client(url, token) as client:
            yield Local(home, client, git_repo(tmp_path / "a"), git_repo(tmp_path / "b"))
    finally:
        stop_local_server(home)


def test_rm_all_removes_only_the_current_repositorys_runs(local: Local) -> None:
    mine, theirs = local.stopped_run(local.a), local.stopped_run(local.b)

    listed = local.invoke("ps", "-a", cwd=local.a)
    removed = local.invoke("rm", "-a", "-y", cwd=local.a)

    assert (listed.exit_code, mine in listed.output, theirs in listed.output) == (0, True, False)
    assert removed.exit_code == 0, removed.output
    assert removed.output == f"Removed {mine}\n1 run removed; no files of their own to free\n"
    assert [r.name for r in local.client.list_runs(all=True)] == [theirs]


def test_every_repository_is_listed_for_an_admin_only(local: Local, tmp_path: Path) -> None:
    mine, theirs = local.stopped_run(local.a), local.stopped_run(local.b)
    bob = local.client.create_user("bob", repos=[current_repo_id(local.a)]).token
    url = local.client.base_url

    everything = local.invoke("ps", "-a", "--all-repos", "--json", cwd=local.a)
    configured = local.invoke("config", "--url", str(url), "--token", bob, cwd=local.a)
    own = local.invoke("ps", "-a", "--remote", cwd=local.a)
    refused = local.invoke("ps", "-a", "--all-repos", "--remote", cwd=local.a)
    tags = local.invoke("tags", "list", "--all-repos", "--remote", cwd=local.a)
    outside = local.invoke("ps", "-a", cwd=tmp_path)

    assert everything.exit_code == 0, everything.output
    assert (mine in everything.output, theirs in everything.output) == (True, True)
    assert configured.exit_code == 0, configured.output
    assert (own.exit_code, mine in own.output, theirs in own.output) == (0, True, False)
    for result, what in ((refused, "runs"), (tags, "tags")):
        assert isinstance(result.exception, DstackError)
        assert result.exception.message.startswith(
            f"listing the {what} of every repository needs an admin token"
        )
    assert isinstance(outside.exception, DstackError)
    assert outside.exception.hint == "run it inside the repository, or pass --all-repos (admins)"
