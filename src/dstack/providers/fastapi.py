"""`provider: fastapi` — serve an ASGI app with uvicorn."""

from __future__ import annotations

from dstack.models.workflow import WorkflowSpec
from dstack.providers.app import APP_HOST, AppProvider, Launch
from dstack.providers.base import SubmissionContext, quote_all, require


class FastAPIProvider(AppProvider):
    name = "fastapi"
    reads = frozenset({"app", "args"})
    usage = "MODULE:APP"
    positional = "app"
    summary = "Serve a FastAPI app (uvicorn)."
    packages = ("fastapi", "uvicorn")

    def launch(
        self, workflow: WorkflowSpec, ctx: SubmissionContext, port: str, token: str
    ) -> Launch:
        app = require(workflow, workflow.app, "app", "main:app")
        args = quote_all([app, *workflow.args, *ctx.run_args])
        return Launch(command=f'uvicorn {args} --host {APP_HOST} --port "{port}"')
