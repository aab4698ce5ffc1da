"""`provider: lab` — JupyterLab."""

from __future__ import annotations

from dstack.models.workflow import WorkflowSpec
from dstack.providers.app import AppProvider, Launch
from dstack.providers.base import JobContext


def jupyter_launch(app: str, port: str, token: str) -> Launch:
    """`jupyter lab|notebook` on 0.0.0.0; the token goes through `JUPYTER_TOKEN`, which every
    Jupyter server reads, so it stays off the command line."""
    command = f'jupyter {app} --ip 0.0.0.0 --port "{port}" --no-browser --allow-root'
    return Launch(command=command, env={"JUPYTER_TOKEN": token}, url_query={"token": token})


class LabProvider(AppProvider):
    name = "lab"
    summary = "Open JupyterLab."
    packages = ("jupyterlab",)
    needs_token = True

    def launch(self, workflow: WorkflowSpec, ctx: JobContext, port: str, token: str) -> Launch:
        return jupyter_launch("lab", port, token)
