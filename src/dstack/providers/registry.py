"""The providers by name: the built-in ones (an explicit dict), then installed plugins.

Precedence for a workflow's `provider: NAME`: a built-in provider (or alias), then a provider
of the repository's `.dstack/providers.yaml` (`dstack.config` resolves that one into
`WorkflowSpec.repo_provider`), then a plugin of an installed package (entry-point group
`dstack.providers`, `dstack.providers.plugins`), looked up only for names not built in.
"""

from __future__ import annotations

from dstack.errors import ConfigError
from dstack.models.job import JobSpec
from dstack.models.providers import ALIASES
from dstack.models.workflow import WorkflowSpec
from dstack.providers.base import Provider, SubmissionContext
from dstack.providers.bash import BashProvider
from dstack.providers.code import CodeProvider
from dstack.providers.docker import DockerProvider
from dstack.providers.fastapi import FastAPIProvider
from dstack.providers.gradio import GradioProvider
from dstack.providers.lab import LabProvider
from dstack.providers.notebook import NotebookProvider
from dstack.providers.plugins import PluginProviders, plugin_failure
from dstack.providers.python import PythonProvider
from dstack.providers.repo import RepoProvider
from dstack.providers.streamlit import StreamlitProvider
from dstack.providers.torchrun import TorchrunProvider

PROVIDERS: dict[str, Provider] = {
    p.name: p
    for p in (
        BashProvider(),
        PythonProvider(),
        DockerProvider(),
        StreamlitProvider(),
        GradioProvider(),
        FastAPIProvider(),
        LabProvider(),
        NotebookProvider(),
        CodeProvider(),
        TorchrunProvider(),
    )
}

# Installed packages are scanned the first time a name is not built in, not before.
PLUGINS = PluginProviders(builtin={*PROVIDERS, *ALIASES})
_REPO_PROVIDER = RepoProvider()


def _base_name(name: str) -> str:
    base = name.split("@", 1)[0].strip().lower()
    return ALIASES.get(base, base)


def canonical_name(name: str) -> str | None:
    """The registry name for `name` (`lab@experimental` → `lab`), or None if unknown.

    A name that is not built in is looked up among the plugins (which imports that one);
    `ConfigError` naming the package when it fails to load."""
    base = _base_name(name)
    if base in PROVIDERS:
        return base
    return base if PLUGINS.get(base) is not None else None


def known_names() -> list[str]:
    """The built-in providers, then the plugins' (found, not imported)."""
    return [*PROVIDERS, *sorted(PLUGINS.found())]


def provider_origin(name: str) -> str | None:
    """`built-in`, or the package a plugin comes from (`dstack-provider-hello 0.1.0`), or
    None when neither knows `name`. Imports nothing."""
    base = _base_name(name)
    if base in PROVIDERS:
        return "built-in"
    plugin = PLUGINS.found().get(base)
    return plugin.package if plugin is not None else None


def get_provider(name: str, *, where: str | None = None) -> Provider:
    """The provider called `name`; `ConfigError` listing the known ones otherwise."""
    canonical = canonical_name(name)
    provider = None if canonical is None else PROVIDERS.get(canonical) or PLUGINS.get(canonical)
    if provider is None:
        place = f" in {where}" if where else ""
        raise ConfigError(
            f"unknown provider '{name}'{place}",
            hint=f"use one of: {', '.join(known_names())}; or install a package that provides"
            " it, or define it in .dstack/providers.yaml",
        )
    return provider


def job_specs(workflow: WorkflowSpec, ctx: SubmissionContext) -> list[JobSpec]:
    """The jobs that run `workflow` with its provider; each job of `nodes: N` (N > 1)
    becomes N, one per node (`JobSpec.node_rank`), next to each other."""
    return expand_nodes(_provider_job_specs(workflow, ctx))


def expand_nodes(specs: list[JobSpec]) -> list[JobSpec]:
    """Each spec with `resources.nodes` N > 1 as N specs of ranks 0..N-1 (a spec already
    ranked by its provider is kept as it is)."""
    expanded: list[JobSpec] = []
    for spec in specs:
        nodes = spec.resources.nodes
        if nodes <= 1 or spec.node_rank:
            expanded.append(spec)
            continue
        expanded.extend(spec.model_copy(update={"node_rank": rank}) for rank in range(nodes))
    return expanded


def _provider_job_specs(workflow: WorkflowSpec, ctx: SubmissionContext) -> list[JobSpec]:
    if workflow.repo_provider is not None:
        return _REPO_PROVIDER.job_specs(workflow, ctx)
    where = f"workflow '{workflow.name}' ({workflow.source})"
    provider = get_provider(workflow.provider, where=where)
    if workflow.provider != provider.name:
        workflow = workflow.model_copy(update={"provider": provider.name})
    if provider.name in PROVIDERS:
        return provider.job_specs(workflow, ctx)
    return _plugin_job_specs(provider, workflow, ctx)


def _plugin_job_specs(
    provider: Provider, workflow: WorkflowSpec, ctx: SubmissionContext
) -> list[JobSpec]:
    """A plugin's jobs; whatever it raises (but a `ConfigError`) is one line naming it."""
    package = provider_origin(provider.name) or "?"
    try:
        specs = provider.job_specs(workflow, ctx)
    except ConfigError:
        raise
    except Exception as exc:
        raise plugin_failure(provider.name, package, exc) from None
    if not isinstance(specs, list) or not specs or not all(isinstance(s, JobSpec) for s in specs):
        raise plugin_failure(
            provider.name, package, TypeError("job_specs must return a list of JobSpec")
        )
    return specs
