"""`provider: streamlit` — serve a Streamlit app."""

from __future__ import annotations

from dstack.models.workflow import WorkflowSpec
from dstack.providers.app import APP_HOST, AppProvider, Launch
from dstack.providers.base import SubmissionContext, quote_all, require


class StreamlitProvider(AppProvider):
    name = "streamlit"
    reads = frozenset({"file", "args"})
    usage = "FILE [ARGS]..."
    positional = "file"
    summary = "Serve a Streamlit app."
    packages = ("streamlit",)

    def launch(
        self, workflow: WorkflowSpec, ctx: SubmissionContext, port: str, token: str
    ) -> Launch:
        file = require(workflow, workflow.file, "file", "app.py")
        # headless: otherwise Streamlit asks for an e-mail address on first start
        command = (
            f"streamlit run {quote_all([file])} --server.address {APP_HOST}"
            f' --server.port "{port}" --server.headless true'
        )
        args = [*workflow.args, *ctx.run_args]
        if args:
            command += f" -- {quote_all(args)}"
        return Launch(command=command)
