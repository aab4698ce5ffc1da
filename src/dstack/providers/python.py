"""`provider: python` — run a Python script."""

from __future__ import annotations

from dstack.models.job import JobSpec
from dstack.models.workflow import WorkflowSpec
from dstack.providers.base import (
    Provider,
    SubmissionContext,
    base_job_spec,
    pip_install_requirements,
    quote_all,
    require,
)


class PythonProvider(Provider):
    """`python FILE ARGS... RUN_ARGS...` after the requirements and `setup`."""

    name = "python"
    reads = frozenset({"file", "args"})
    usage = "FILE [ARGS]..."
    positional = "file"
    summary = "Run a Python script."

    def job_spec(self, workflow: WorkflowSpec, ctx: SubmissionContext) -> JobSpec:
        file = require(workflow, workflow.file, "file", "train.py")
        command = f"python {quote_all([file, *workflow.args, *ctx.run_args])}"
        commands = [*pip_install_requirements(workflow), *workflow.setup, command]
        return base_job_spec(workflow, ctx, commands=commands)
