"""One workflow of a `RepoConfig` + the `dstack run` arguments → a `ResolvedWorkflow`."""

from __future__ import annotations

from dataclasses import dataclass

from dstack.config.files import LineDict
from dstack.config.location import close_matches
from dstack.config.normalize import repo_provider_of, to_spec, validate_raw, workflow_params
from dstack.config.prepare import prepare_workflow
from dstack.config.repo_config import RepoConfig
from dstack.config.schema import RawWorkflow, field_names
from dstack.config.variables import Interpolator, env_name, split_overrides
from dstack.errors import ConfigError
from dstack.models.workflow import WorkflowSpec


@dataclass(frozen=True)
class ResolvedWorkflow:
    """A workflow ready for its provider, and the `dstack run` arguments meant for the job.

    `places_run_args`: its file places them (`${{ run.args }}`); a provider may use them too.
    """

    spec: WorkflowSpec
    run_args: list[str]
    places_run_args: bool = False


def resolve_workflow(config: RepoConfig, name: str, argv: list[str]) -> ResolvedWorkflow:
    """Resolve variables, interpolate and normalize workflow ``name``.

    ``argv`` are the arguments after the workflow name: ``--var value`` / ``--var=value`` set
    declared variables, everything else is kept in order in ``run_args``. Raises `ConfigError`.
    """
    entry = config.workflows.get(name)
    if entry is None:
        raise _unknown_workflow(config, name)
    declared = config.declared_variables(name)
    overrides, run_args = split_overrides(argv, declared, entry.where)
    variables = {**declared, **overrides}
    repo_provider = repo_provider_of(entry.raw, config.custom_providers, entry.where)
    prepared = prepare_workflow(entry.raw, entry.where, open_keys=repo_provider is not None)
    interpolator = Interpolator(variables, run_args, entry.where)
    interpolated = interpolator.apply(prepared)
    params: dict[str, str] = {}
    if repo_provider is not None:
        params = workflow_params(interpolated)
        interpolated = _known_keys(interpolated)
    raw = validate_raw(interpolated, entry.where)
    spec = to_spec(raw, interpolated, entry.where, repo_provider)
    env = {env_name(key): var.text for key, var in variables.items()}
    spec = spec.model_copy(
        update={
            "variables": {key: var.text for key, var in variables.items()},
            "env": {**env, **spec.env},
            "params": params,
        }
    )
    return ResolvedWorkflow(
        spec=spec, run_args=run_args, places_run_args="run_args" in interpolator.used
    )


def _known_keys(data: LineDict) -> LineDict:
    """The keys `RawWorkflow` types; the others are only parameters of the provider."""
    known = set(field_names(RawWorkflow))
    return LineDict({k: v for k, v in data.items() if k in known}).copy_lines(data)


def _unknown_workflow(config: RepoConfig, name: str) -> ConfigError:
    names = config.workflow_names()
    matches = close_matches(name, names)
    if matches:
        hint = "did you mean " + " or ".join(f"'{m}'" for m in matches) + "?"
    elif names:
        hint = "workflows: " + ", ".join(names)
    else:
        hint = "define it in .dstack/workflows.yaml"
    return ConfigError(f"unknown workflow '{name}'", hint=hint)
