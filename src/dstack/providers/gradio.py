"""`provider: gradio` — serve a Gradio app."""

from __future__ import annotations

from dstack.models.workflow import WorkflowSpec
from dstack.providers.app import APP_HOST, AppProvider, Launch
from dstack.providers.base import SubmissionContext, quote_all, require


class GradioProvider(AppProvider):
    """Gradio reads its address and port from `GRADIO_SERVER_NAME` / `GRADIO_SERVER_PORT`
    (unless the app passes `server_name` / `server_port` to `launch()` itself)."""

    name = "gradio"
    reads = frozenset({"file", "args"})
    usage = "FILE [ARGS]..."
    positional = "file"
    summary = "Serve a Gradio app."
    packages = ("gradio",)

    def launch(
        self, workflow: WorkflowSpec, ctx: SubmissionContext, port: str, token: str
    ) -> Launch:
        file = require(workflow, workflow.file, "file", "app.py")
        # both are known only when the job starts, so they are set on the command line
        args = quote_all([file, *workflow.args, *ctx.run_args])
        command = f'GRADIO_SERVER_NAME={APP_HOST} GRADIO_SERVER_PORT="{port}" python {args}'
        return Launch(command=command)
