"""Run planning: which jobs a run starts, in which order, and what each waits for.

Pure: reads the already-loaded config, starts nothing, talks to no server. Dependencies on
tags and on earlier runs are kept as `external_deps`; the server resolves them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from pydantic import Field

from dstack.config import RepoConfig, ResolvedWorkflow, resolve_workflow
from dstack.config.arguments import check_run_arguments
from dstack.config.normalize import warn
from dstack.errors import ConfigError
from dstack.models.common import Model
from dstack.models.job import JobSpec
from dstack.models.workflow import DepKind, DepRef, WorkflowSpec
from dstack.providers.args import parse_provider_args
from dstack.providers.base import OPTIONAL_FIELDS, Provider, SubmissionContext, new_token
from dstack.providers.registry import get_provider, job_specs

TokenFactory = Callable[[], str]


class PlannedJob(Model):
    workflow_name: str | None = Field(description="None for a provider run from the CLI.")
    spec: JobSpec
    deps: list[int] = Field(default_factory=list, description="Indexes of jobs it waits for.")
    external_deps: list[DepRef] = Field(
        default_factory=list, description="Tags and latest runs whose artifacts it needs."
    )


class RunPlan(Model):
    workflow_name: str | None
    provider: str
    jobs: list[PlannedJob] = Field(description="In dependency order: dependencies first.")
    run_args: list[str] = Field(default_factory=list)
    variables: dict[str, str] = Field(default_factory=dict)


def is_local_workflow_dep(dep: DepRef) -> bool:
    """A dependency that becomes part of this run's DAG (a workflow of this repository)."""
    return dep.kind is DepKind.WORKFLOW and dep.repo is None


def plan_workflow(
    config: RepoConfig,
    name: str,
    argv: list[str],
    *,
    subdir: str,
    environ: Mapping[str, str],
    token_factory: TokenFactory = new_token,
) -> RunPlan:
    """The jobs of workflow `name` and, first, of every workflow it depends on (once each).

    `argv` (the arguments after the name) go to the target only; its dependencies are
    resolved with their defaults. Raises `ConfigError` on a cycle, an unknown workflow, or an
    argument the workflow cannot mean (`config.arguments`). A key of a workflow that its
    provider ignores is one warning line each.
    """
    target = resolve_workflow(config, name, argv)
    check_run_arguments(config, name, argv, consumes=_consumes_arguments(target))
    order = _dependency_order(config, target.spec)
    for spec in order:
        _warn_ignored_keys(spec)
    jobs: list[PlannedJob] = []
    job_indexes: dict[str, list[int]] = {}
    for spec in order:
        is_target = spec is target.spec
        ctx = SubmissionContext(
            subdir=subdir,
            environ=environ,
            run_args=list(target.run_args) if is_target else [],
            token_factory=token_factory,
        )
        # dict.fromkeys: a dependency listed twice is still waited for once
        deps = list(
            dict.fromkeys(
                i
                for d in spec.deps
                if is_local_workflow_dep(d)
                for i in job_indexes[d.workflow or ""]
            )
        )
        external = [d for d in spec.deps if not is_local_workflow_dep(d)]
        start = len(jobs)
        for job_spec in job_specs(spec, ctx):
            jobs.append(
                PlannedJob(
                    workflow_name=spec.name, spec=job_spec, deps=deps, external_deps=external
                )
            )
        job_indexes[spec.name] = list(range(start, len(jobs)))
    return RunPlan(
        workflow_name=name,
        provider=jobs[-1].spec.provider,
        jobs=jobs,
        run_args=list(target.run_args),
        variables=dict(target.spec.variables),
    )


def _provider_of(spec: WorkflowSpec) -> Provider | None:
    """The provider of a workflow; None for a `.dstack/providers.yaml` one."""
    if spec.repo_provider is not None:
        return None
    return get_provider(spec.provider, where=f"workflow '{spec.name}' ({spec.source})")


def _consumes_arguments(target: ResolvedWorkflow) -> bool:
    """The run's arguments go somewhere: `${{ run.args }}`, a script's provider, or a
    provider whose use of them dstack cannot see (providers.yaml, a package)."""
    provider = _provider_of(target.spec)
    if target.places_run_args or provider is None or provider.reads is None:
        return True
    return provider.positional in ("file", "app")


def _warn_ignored_keys(spec: WorkflowSpec) -> None:
    """`.dstack/workflows.yaml:3: workflow 'train': 'commands' is ignored by the python
    provider`: one line per key the workflow sets and its provider does not use."""
    provider = _provider_of(spec)
    if provider is None:
        return
    ignored = [] if provider.reads is None else sorted(set(OPTIONAL_FIELDS) - provider.reads)
    ignored = [key for key in ignored if getattr(spec, key)]
    if spec.ssh:
        ignored.append("ssh")
    for key in ignored:
        warn(
            f"{spec.source}: workflow '{spec.name}': '{key}' is ignored by the {provider.name}"
            " provider"
        )


def _dependency_order(config: RepoConfig, target: WorkflowSpec) -> list[WorkflowSpec]:
    """`target` and the workflows it needs, dependencies before dependents."""
    known = set(config.workflow_names())
    done: dict[str, WorkflowSpec] = {}
    order: list[WorkflowSpec] = []

    def visit(spec: WorkflowSpec, stack: list[str]) -> None:
        for dep in spec.deps:
            if not is_local_workflow_dep(dep) or dep.workflow in done:
                continue
            dep_name = dep.workflow or ""
            if dep_name in stack:
                cycle = " → ".join([*stack[stack.index(dep_name) :], dep_name])
                raise ConfigError(
                    f"workflows depend on each other in a cycle: {cycle} ({spec.source})",
                    hint="remove one of these dependencies",
                )
            if dep_name not in known:
                raise ConfigError(
                    f"workflow '{spec.name}' ({spec.source}) depends on unknown workflow"
                    f" '{dep_name}'",
                    hint=_known_hint(known),
                )
            visit(resolve_workflow(config, dep_name, []).spec, [*stack, dep_name])
        done[spec.name] = spec
        order.append(spec)

    visit(target, [target.name])
    return order


def _known_hint(known: set[str]) -> str:
    if not known:
        return "define it in .dstack/workflows.yaml"
    return f"workflows of this repository: {', '.join(sorted(known))}"


def plan_provider(
    provider: str,
    argv: list[str],
    *,
    subdir: str,
    environ: Mapping[str, str],
    token_factory: TokenFactory = new_token,
) -> RunPlan:
    """The single job of `dstack run <provider> ARGV...`; `subdir` is where it was typed,
    relative to the repository root. Every `--dep` is external (nothing else runs first)."""
    spec = parse_provider_args(provider, argv)
    ctx = SubmissionContext(
        subdir=subdir, environ=environ, from_cli=True, token_factory=token_factory
    )
    jobs = [
        PlannedJob(workflow_name=None, spec=job_spec, external_deps=list(spec.deps))
        for job_spec in job_specs(spec, ctx)
    ]
    return RunPlan(
        workflow_name=None,
        provider=get_provider(provider).name,
        jobs=jobs,
        run_args=list(argv),
    )
