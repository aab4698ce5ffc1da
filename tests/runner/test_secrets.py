"""Secrets on the runner: references become environment lookups, values are masked in logs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dstack.models.job import JobSpec
from dstack.models.logs import LogStream
from dstack.models.protocol import JobAssignment
from dstack.models.repo import RepoRef
from dstack.runner.environment import job_env, with_secret_references
from dstack.runner.errors import JobStartError
from dstack.runner.logs import LogSpool

VALUE = "s3cr3t-value"


def assignment(
    commands: list[str], env: dict[str, str] | None = None, secrets: dict[str, str] | None = None
) -> JobAssignment:
    spec = JobSpec(provider="bash", commands=commands, env=env or {})
    repo = RepoRef(repo_id="github.com/acme/models", tree="0" * 40)
    return JobAssignment(
        job_id="j1",
        run_name="wise-cat-1",
        job_index=0,
        spec=spec,
        repo=repo,
        secrets=secrets if secrets is not None else {"HF_TOKEN": VALUE},
    )


def spooled(directory: Path) -> str:
    lines = (directory / "spool.jsonl").read_text().splitlines()
    return "".join(json.loads(line)[3] for line in lines)


def test_commands_refer_to_the_environment_instead_of_the_value() -> None:
    job = assignment(["login --token ${{ secrets.HF_TOKEN }}", "echo ${{secrets.HF_TOKEN}}!"])

    spec = with_secret_references(job.spec, job.secrets)

    assert spec.commands == ["login --token ${HF_TOKEN}", "echo ${HF_TOKEN}!"]
    assert VALUE not in spec.model_dump_json()
    assert job.spec.commands[0] == "login --token ${{ secrets.HF_TOKEN }}"  # unchanged


def test_every_secret_is_exported_and_env_values_are_filled_in() -> None:
    job = assignment(["true"], env={"AUTH": "Bearer ${{ secrets.HF_TOKEN }}", "HF_TOKEN": "x"})

    env = job_env(job, host_ports=[])

    assert env["AUTH"] == f"Bearer {VALUE}"
    assert env["HF_TOKEN"] == VALUE  # a job's env cannot shadow a secret


@pytest.mark.parametrize(
    "job",
    [
        assignment(["echo ${{ secrets.NOPE }}"]),
        assignment(["true"], env={"X": "${{ secrets.NOPE }}"}),
    ],
)
def test_an_unknown_secret_stops_the_job_before_it_runs(job: JobAssignment) -> None:
    def prepare() -> None:
        with_secret_references(job.spec, job.secrets)
        job_env(job, host_ports=[])

    with pytest.raises(JobStartError) as raised:
        prepare()

    assert raised.value.message == "the job refers to secret 'NOPE', which the server does not have"
    assert raised.value.hint == "add it: dstack secrets add NOPE"


def test_a_value_split_across_two_writes_is_masked(tmp_path: Path) -> None:
    spool = LogSpool(tmp_path, secrets=[VALUE])

    spool.write(LogStream.STDOUT, b"token: s3cr")
    spool.write(LogStream.STDOUT, b"3t-value and more\n")
    spool.write(LogStream.STDOUT, b"partial s3c")
    spool.close()

    assert spooled(tmp_path) == "token: *** and more\npartial s3c"
    assert b"s3cr3t" not in (tmp_path / "spool.jsonl").read_bytes()


def test_only_a_possible_start_of_a_secret_waits(tmp_path: Path) -> None:
    spool = LogSpool(tmp_path, secrets=[VALUE])

    spool.write(LogStream.STDOUT, b"epoch 1/10 s3")
    assert spooled(tmp_path) == "epoch 1/10 "
    spool.write_line("runner: note", LogStream.STDERR)  # stderr: the held stdout keeps waiting
    assert spooled(tmp_path) == "epoch 1/10 runner: note\n"
    spool.write_line("runner: stdout note", LogStream.STDOUT)  # stdout: in order
    spool.close()

    assert spooled(tmp_path) == "epoch 1/10 runner: note\ns3runner: stdout note\n"
