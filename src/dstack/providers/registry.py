"""The providers by name: an explicit dict, no plug-in discovery."""

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
from dstack.providers.python import PythonProvider
from dstack.providers.streamlit import StreamlitProvider

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
    )
}


def canonical_name(name: str) -> str | None:
    """The registry name for `name` (`lab@experimental` → `lab`), or None if unknown."""
    base = name.split("@", 1)[0].strip().lower()
    base = ALIASES.get(base, base)
    return base if base in PROVIDERS else None


def get_provider(name: str, *, where: str | None = None) -> Provider:
    """The provider called `name`; `ConfigError` listing the known ones otherwise."""
    canonical = canonical_name(name)
    if canonical is None:
        place = f" in {where}" if where else ""
        raise ConfigError(
            f"unknown provider '{name}'{place}",
            hint=f"use one of: {', '.join(PROVIDERS)}",
        )
    return PROVIDERS[canonical]


def job_specs(workflow: WorkflowSpec, ctx: SubmissionContext) -> list[JobSpec]:
    """The jobs that run `workflow` with its provider."""
    where = f"workflow '{workflow.name}' ({workflow.source})"
    provider = get_provider(workflow.provider, where=where)
    if workflow.provider != provider.name:
        workflow = workflow.model_copy(update={"provider": provider.name})
    return provider.job_specs(workflow, ctx)
