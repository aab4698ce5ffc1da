"""`provider: hello` (and `dstack run hello NAME...`): a job that says hello.

An example of a provider from outside dstack: a `Provider` subclass, registered under the
entry-point group `dstack.providers` in `pyproject.toml`. It gets the workflow as
`dstack.config` read it (a `WorkflowSpec`) and returns the job; `base_job_spec` fills in
everything the workflow says (env, variables, resources, artifacts, deps, working dir).
"""

from __future__ import annotations

import shlex

from dstack.models.job import JobSpec
from dstack.models.workflow import WorkflowSpec
from dstack.providers.base import Provider, SubmissionContext, base_job_spec


class HelloProvider(Provider):
    name = "hello"  # must be the entry point's name
    usage = "[NAME]..."  # `dstack run hello [OPTIONS] [NAME]...`
    positional = "args"  # the positional arguments go to `workflow.args`
    summary = "Say hello to NAME (an example provider package)."

    def job_spec(self, workflow: WorkflowSpec, ctx: SubmissionContext) -> JobSpec:
        names = [*workflow.args, *ctx.run_args] or ["world"]
        greeting = f"Hello, {' and '.join(names)}!"
        commands = [*workflow.setup, f"echo {shlex.quote(greeting)}"]
        return base_job_spec(workflow, ctx, commands=commands)
