"""Providers of a repository's own `.dstack/providers.yaml`: an image and commands.

`dstack.config` puts the provider a workflow names into `WorkflowSpec.repo_provider`, and the
workflow's keys into `params`. The job runs the provider's image and commands, with its
artifacts, and everything else from the workflow as for `provider: docker` (env, variables,
resources, deps, ports, working dir). Its commands see the workflow's keys as variables:
`url: https://...` → `$URL`, `python_script: train.py` → `$PYTHON_SCRIPT`,
`resources: {gpu: 1}` → `$RESOURCES` = `{"gpu": 1}` (see `param_env`).
"""

from __future__ import annotations

import re

from dstack.config.variables import env_name
from dstack.errors import ConfigError
from dstack.models.job import JobSpec
from dstack.models.workflow import ArtifactSpec, WorkflowSpec
from dstack.providers.base import Provider, SubmissionContext, base_job_spec

_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
# what a workflow key may not replace: the shell's and the runner's own variables
_RESERVED = frozenset({"PATH", "HOME", "USER", "SHELL", "PWD", "HOSTNAME", "TERM", "LANG"})
_RESERVED_PREFIXES = ("DSTACK_", "LD_", "PORT_")


def param_env(params: dict[str, str]) -> dict[str, str]:
    """`python_script` → `PYTHON_SCRIPT`, `depends-on` → `DEPENDS_ON`; a key that makes no
    variable name, or one of the shell's or dstack's own (PATH, HOME, DSTACK_*, PORT_*, ...),
    is left out. The workflow's `env` and variables win over these (`base_job_spec`)."""
    env: dict[str, str] = {}
    for key, value in params.items():
        name = env_name(key)
        if not _ENV_NAME.match(name) or name in _RESERVED or name.startswith(_RESERVED_PREFIXES):
            continue
        env[name] = value
    return env


class RepoProvider(Provider):
    """Not in the registry: `job_specs` picks it when the workflow has a `repo_provider`."""

    name = "providers.yaml"
    summary = "A provider of the repository's .dstack/providers.yaml."

    def job_spec(self, workflow: WorkflowSpec, ctx: SubmissionContext) -> JobSpec:
        spec = workflow.repo_provider
        if spec is None:
            raise ConfigError(f"workflow '{workflow.name}' names no provider of providers.yaml")
        paths = {a.path for a in spec.artifacts}
        artifacts: list[ArtifactSpec] = [
            *spec.artifacts,
            *(a for a in workflow.artifacts if a.path not in paths),
        ]
        # The image and its commands are the provider's: nothing is installed for it.
        job_workflow = workflow.model_copy(
            update={
                "image": spec.image,
                "artifacts": artifacts,
                "requirements": None,
                "python": None,
                "entrypoint": None,
            }
        )
        return base_job_spec(
            job_workflow,
            ctx,
            commands=[*workflow.setup, *spec.commands],
            env=param_env(workflow.params),
        )
