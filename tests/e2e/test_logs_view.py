"""What `dstack logs` and `dstack run` show of a run's output, through the real CLI: job
prefixes in a run of several jobs, `--timestamps`, the runner's own stream (`--runner`), a
declared artifact never written, and a run whose jobs were all cached."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

from dstack.api.client import Client
from dstack.server.local import ensure_local_server

if TYPE_CHECKING:
    from tests.e2e.conftest import Env

WORKFLOWS = """
workflows:
  - name: prepare
    provider: bash
    commands: [mkdir -p data, echo x > data/x.txt, echo prepared, echo warned >&2]
    artifacts: [data]
  - name: train
    provider: bash
    deps:
      - workflow: prepare
    commands: [echo trained]
    artifacts: [checkpoint]
"""
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def test_logs_of_a_run_of_several_jobs(process_env: Env) -> None:
    env = process_env
    env.workflows(WORKFLOWS)
    env.commit()

    ran = env.dstack("run", "train")
    name = json.loads(env.dstack("ps", "--json").out)[0]["name"]
    logs = env.dstack("logs", name)
    stamped = env.dstack("logs", "-t", name)
    with_runner = env.dstack("logs", "--runner", name)
    listed = env.dstack("ls", name)
    url, token = ensure_local_server(env.home, start_runner=False)
    with Client(url, token) as client:
        artifacts = {job.workflow_name: job.manifests for job in client.get_artifacts(name)}

    assert ran.code == 0, ran
    assert "[prepare] prepared\n" in ran.out
    assert "[train] trained\n" in ran.out
    assert "uploaded" not in ran.out + ran.err  # the runner's messages: only when asked
    assert logs.code == 0, logs
    assert logs.out == "[prepare] prepared\n[train] trained\n"
    assert logs.err == "[prepare] warned\n"
    assert re.fullmatch(rf"{STAMP} \[prepare\] prepared\n{STAMP} \[train\] trained\n", stamped.out)
    assert with_runner.out == logs.out
    runner_lines = with_runner.err.splitlines()
    assert "[prepare] warned" in runner_lines
    assert any(re.match(r"\[prepare\] uploaded 1 file .* of data", x) for x in runner_lines)
    assert "[train] artifact 'checkpoint' was declared but not written" in runner_lines
    assert listed.code == 0, listed  # not an error: the artifact is there, empty
    assert [(m.path, m.files) for m in artifacts["train"]] == [("checkpoint", [])]


def test_logs_of_a_run_whose_jobs_were_all_cached_say_so(process_env: Env) -> None:
    env = process_env
    env.workflows(WORKFLOWS)
    env.commit()
    assert env.dstack("run", "prepare").code == 0
    first = json.loads(env.dstack("ps", "--json").out)[0]["name"]

    again = env.dstack("run", "prepare")
    second = json.loads(env.dstack("ps", "--json").out)[0]["name"]
    logs = env.dstack("logs", second)

    assert again.code == 0, again
    assert second != first
    assert logs.code == 0, logs
    assert logs.out == ""
    assert logs.err == (
        f"{second} has no output: every job reused the results of run {first}"
        f" (cached; `dstack logs {first}` shows the output that made them)\n"
    )


def test_run_shows_the_lines_as_logs_does_with_timestamps_and_runner(process_env: Env) -> None:
    env = process_env
    env.workflows(WORKFLOWS)
    env.commit()

    # before the workflow's name, and after it (as dstack's other options may stand)
    early = env.dstack("run", "--timestamps", "--runner", "prepare")
    late = env.dstack("run", "train", "--reload", "--timestamps", "--runner")
    plain = env.dstack("run", "train", "--reload")

    assert early.code == 0, early
    assert re.fullmatch(rf"{STAMP} prepared\n", early.out)
    err_lines = early.err.splitlines()
    assert any(re.fullmatch(rf"{STAMP} warned", x) for x in err_lines), early.err
    assert any(re.match(rf"{STAMP} uploaded 1 file .* of data", x) for x in err_lines), early.err
    assert late.code == 0, late
    assert re.fullmatch(rf"{STAMP} \[prepare\] prepared\n{STAMP} \[train\] trained\n", late.out)
    assert any(
        re.fullmatch(rf"{STAMP} \[train\] artifact 'checkpoint' was declared but not written", x)
        for x in late.err.splitlines()
    ), late.err
    assert plain.out == "[prepare] prepared\n[train] trained\n"
    assert "declared but not written" not in plain.err
