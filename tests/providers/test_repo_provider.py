"""Providers of `.dstack/providers.yaml`: the provider's image, commands and artifacts, the
workflow's keys as variables, everything else from the workflow as for `docker`."""

from __future__ import annotations

from pathlib import Path

from tests.config.helpers import write_repo

from dstack.config import load_config, resolve_workflow
from dstack.models.job import JobSpec
from dstack.providers import SubmissionContext, job_specs

PROVIDERS = """\
providers:
  - name: download
    image: python:3.9
    commands:
      - echo "$URL" > "$OUTPUT"
    artifacts:
      - data
"""

WORKFLOWS = """\
workflows:
  - name: get
    provider: download
    url: https://example.com/${{ file }}
    output: data/input.txt
    retries: 3
    verbose: true
    working_dir: sub
    env:
      - OUTPUT=data/override.txt
    artifacts:
      - logs
    resources:
      gpu: 1
      memory: 8GB
    deps:
      - tag: v1
"""


def _job(root: Path, workflows: str = WORKFLOWS, providers: str = PROVIDERS) -> JobSpec:
    write_repo(root, workflows, "variables:\n  get:\n    file: a.txt\n")
    (root / ".dstack" / "providers.yaml").write_text(providers)
    spec = resolve_workflow(load_config(root), "get", []).spec
    (job,) = job_specs(spec, SubmissionContext())
    return job


def test_the_providers_image_commands_and_artifacts(tmp_path: Path) -> None:
    job = _job(tmp_path)
    assert job.provider == "download"
    assert job.image == "python:3.9"
    assert job.commands == ['echo "$URL" > "$OUTPUT"']
    assert job.entrypoint is None
    assert [a.path for a in job.artifacts] == ["data", "logs"]
    assert job.requirements is None


def test_the_workflows_keys_reach_the_commands_as_variables(tmp_path: Path) -> None:
    job = _job(tmp_path)
    env = job.env
    assert env["URL"] == "https://example.com/a.txt"  # interpolated first
    assert env["RETRIES"] == "3"
    assert env["VERBOSE"] == "true"
    assert env["RESOURCES"] == '{"gpu": 1, "memory": "8GB"}'
    assert env["FILE"] == "a.txt"  # a variable, as for every provider
    assert env["OUTPUT"] == "data/override.txt"  # the workflow's env wins
    assert "NAME" not in env
    assert "PROVIDER" not in env


def test_the_workflows_resources_deps_and_working_dir_apply(tmp_path: Path) -> None:
    job = _job(tmp_path)
    assert job.resources.gpu_count == 1
    assert job.resources.memory_mib == 8192
    assert job.working_dir == "sub"


def test_keys_that_would_replace_the_shells_own_are_left_out(tmp_path: Path) -> None:
    workflows = "workflows:\n  - name: get\n    provider: download\n    path: x\n    home: y\n"
    workflows += "    dstack_run: z\n    odd key: 1\n"
    env = _job(tmp_path, workflows).env
    assert "PATH" not in env
    assert "HOME" not in env
    assert "DSTACK_RUN" not in env
    assert "ODD KEY" not in env


def test_a_provider_without_commands_runs_the_images_own(tmp_path: Path) -> None:
    job = _job(tmp_path, providers="providers:\n  - name: download\n    image: busybox\n")
    assert job.commands == []
    assert job.image == "busybox"
