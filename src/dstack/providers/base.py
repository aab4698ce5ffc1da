"""What every provider shares: the context of a run and the fields common to all jobs.

A provider only decides the commands (and entrypoint, extra env, ports, apps) of its job;
`base_job_spec` fills in everything else from the workflow the same way for all of them.
"""

from __future__ import annotations

import posixpath
import secrets
import shlex
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from dstack.errors import ConfigError
from dstack.models.job import AppSpec, JobSpec, PortSpec
from dstack.models.workflow import WorkflowSpec

OPTIONAL_FIELDS = ("commands", "entrypoint", "file", "app", "args")
"""Workflow fields only some providers use."""


def new_token() -> str:
    return secrets.token_urlsafe(16)


@dataclass(frozen=True)
class SubmissionContext:
    """How a workflow was submitted: where from, with which arguments and environment.

    Client-side input to providers (not to be confused with `runner.executors.JobLaunch`,
    what an executor gets to start one job on a host).

    `subdir`: the `.dstack` folder's parent, relative to the repository root ("" for the root).
    `environ`: the submitting user's environment (for `env` entries without a value).
    `run_args`: the arguments after the workflow name on the command line.
    `from_cli`: the workflow was built from `dstack run <provider> ...`, not read from a file.
    `token_factory`: makes the secret tokens of apps (injected by tests).
    """

    subdir: str = ""
    environ: Mapping[str, str] = field(default_factory=dict)
    run_args: list[str] = field(default_factory=list)
    from_cli: bool = False
    token_factory: Callable[[], str] = new_token


class Provider(ABC):
    """Turns one `WorkflowSpec` into the jobs that run it.

    `usage` is the positional part of `dstack run <name> ...` shown in help and errors;
    `positional` says what the first positional argument on the command line is: the
    `WorkflowSpec` field it sets (`file`, `app`, `image`; the rest go to `args`), `args` (all
    of them go to `args`) or `None` (the provider takes none).

    Packages add providers through the entry-point group `dstack.providers` (see
    `dstack.providers.plugins`): a subclass of this class, with its own `name`.
    """

    name: ClassVar[str]
    usage: ClassVar[str] = ""
    positional: ClassVar[str | None] = None
    summary: ClassVar[str] = ""
    reads: ClassVar[frozenset[str] | None] = None
    """Which of `OPTIONAL_FIELDS` its jobs use (a workflow setting another one is warned
    about); None: it may use any of them (a provider from a package)."""

    def job_specs(self, workflow: WorkflowSpec, ctx: SubmissionContext) -> list[JobSpec]:
        """One job (`nodes: N` makes it N, one per node: `registry.expand_nodes`)."""
        return [self.job_spec(workflow, ctx)]

    @abstractmethod
    def job_spec(self, workflow: WorkflowSpec, ctx: SubmissionContext) -> JobSpec:
        """The job of `workflow`; raises `ConfigError` naming the workflow on bad input."""


def where(workflow: WorkflowSpec) -> str:
    """`workflow 'train' (.dstack/workflows.yaml:3)`, for error messages."""
    return f"workflow '{workflow.name}' ({workflow.source})"


def require(workflow: WorkflowSpec, value: str | None, key: str, example: str) -> str:
    """`value`, or a `ConfigError` saying that `key` is missing from the workflow."""
    if not value:
        raise ConfigError(
            f"{where(workflow)} has no '{key}'",
            hint=f"the {workflow.provider} provider needs it, e.g. `{key}: {example}`",
        )
    return value


def quote_all(args: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in args)


def pip_install_requirements(workflow: WorkflowSpec) -> list[str]:
    """`pip install -r <requirements>` when the workflow has a requirements file."""
    if not workflow.requirements:
        return []
    return [f"pip install -r {shlex.quote(workflow.requirements)}"]


def resolve_env(workflow: WorkflowSpec, ctx: SubmissionContext) -> dict[str, str]:
    """The workflow's env; a name without a value takes the user's, or is dropped."""
    env: dict[str, str] = {}
    for key, value in workflow.env.items():
        if value is None:
            value = ctx.environ.get(key)
        if value is not None:
            env[key] = value
    return env


def job_working_dir(workflow: WorkflowSpec, subdir: str) -> str:
    """The job's working dir relative to the repository root; it may not leave the repo."""
    joined = posixpath.normpath(posixpath.join(subdir or ".", workflow.working_dir or "."))
    if joined == ".." or joined.startswith("../") or posixpath.isabs(joined):
        raise ConfigError(
            f"working_dir '{workflow.working_dir}' of {where(workflow)} is outside the repository",
            hint="use a folder inside the repository, relative to the folder holding .dstack/",
        )
    return joined


def user_ports(workflow: WorkflowSpec) -> list[PortSpec]:
    """Fixed ports (`ports: [8000]`) first, then `ports: N` ports the runner allocates."""
    fixed = [PortSpec(port=p) for p in workflow.ports]
    return fixed + [PortSpec() for _ in range(workflow.port_count)]


def base_job_spec(
    workflow: WorkflowSpec,
    ctx: SubmissionContext,
    *,
    commands: list[str],
    entrypoint: list[str] | None = None,
    env: Mapping[str, str] | None = None,
    ports: list[PortSpec] | None = None,
    apps: list[AppSpec] | None = None,
) -> JobSpec:
    """A `JobSpec` with everything the workflow says; `env` is the provider's own defaults
    (the workflow's env wins over them), `ports` default to the workflow's."""
    job_env = dict(env or {})
    job_env.update(resolve_env(workflow, ctx))
    if not ctx.from_cli:
        job_env["DSTACK_WORKFLOW"] = workflow.name
    return JobSpec(
        workflow_name=None if ctx.from_cli else workflow.name,
        provider=workflow.provider,
        image=workflow.image,
        commands=commands,
        entrypoint=entrypoint,
        env=job_env,
        working_dir=job_working_dir(workflow, ctx.subdir),
        python=workflow.python,
        requirements=workflow.requirements,
        artifacts=list(workflow.artifacts),
        cache=list(workflow.cache),
        ports=user_ports(workflow) if ports is None else ports,
        apps=list(apps or []),
        resources=workflow.resources.model_copy(deep=True),
        registry_auth=workflow.registry_auth,
        triggers=list(workflow.triggers),
        retry=workflow.retry,
        labels=dict(workflow.labels),
    )
