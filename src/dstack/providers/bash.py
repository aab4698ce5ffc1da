"""`provider: bash` — run shell commands."""

from __future__ import annotations

from dstack.errors import ConfigError
from dstack.models.job import JobSpec
from dstack.models.workflow import WorkflowSpec
from dstack.providers.base import (
    Provider,
    SubmissionContext,
    base_job_spec,
    pip_install_requirements,
    quote_all,
    where,
)


class BashProvider(Provider):
    """`setup` then `commands`, each run with bash; a requirements file is installed first.

    The workflow's `args` (for `dstack run bash -c CMD ARGS...`: the ARGS) are appended to the
    last command. The arguments after a workflow's name are not: its file places them with
    `${{ run.args }}`.
    """

    name = "bash"
    reads = frozenset({"commands", "args"})
    usage = "-c COMMAND [-c COMMAND]... [ARGS]..."
    summary = "Run shell commands."

    def job_spec(self, workflow: WorkflowSpec, ctx: SubmissionContext) -> JobSpec:
        commands = [*workflow.setup, *workflow.commands]
        if not workflow.commands:
            raise ConfigError(
                f"{where(workflow)} has no commands",
                hint="add `commands:` to the workflow (or `-c COMMAND` on the command line)",
            )
        if workflow.args:
            commands[-1] = f"{commands[-1]} {quote_all(workflow.args)}"
        return base_job_spec(
            workflow, ctx, commands=[*pip_install_requirements(workflow), *commands]
        )
