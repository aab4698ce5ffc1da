"""`provider: notebook` — Jupyter Notebook."""

from __future__ import annotations

from dstack.models.workflow import WorkflowSpec
from dstack.providers.app import AppProvider, Launch
from dstack.providers.base import SubmissionContext
from dstack.providers.lab import jupyter_launch


class NotebookProvider(AppProvider):
    name = "notebook"
    reads = frozenset()
    summary = "Open Jupyter Notebook."
    packages = ("notebook",)
    needs_token = True

    def launch(
        self, workflow: WorkflowSpec, ctx: SubmissionContext, port: str, token: str
    ) -> Launch:
        return jupyter_launch("notebook", port, token, "/tree")
