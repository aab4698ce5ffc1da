"""`provider: lab` — JupyterLab."""

from __future__ import annotations

from dstack.models.workflow import WorkflowSpec
from dstack.providers.app import APP_HOST, AppProvider, Launch
from dstack.providers.base import SubmissionContext


def jupyter_launch(app: str, port: str, token: str, url_path: str) -> Launch:
    """`jupyter lab|notebook` (JupyterLab 4, Notebook 7: both Jupyter Server 2) on `APP_HOST`.

    The token goes through `JUPYTER_TOKEN`, which Jupyter Server reads as the default of
    `--IdentityProvider.token`, so it stays off the command line (and out of `ps`).
    `--allow-root`: containers usually run as root, where Jupyter refuses to start without it.
    """
    command = f'jupyter {app} --ip {APP_HOST} --port "{port}" --no-browser --allow-root'
    return Launch(
        command=command,
        env={"JUPYTER_TOKEN": token},
        url_path=url_path,
        url_query={"token": token},
    )


class LabProvider(AppProvider):
    name = "lab"
    reads = frozenset()
    summary = "Open JupyterLab."
    packages = ("jupyterlab",)
    needs_token = True

    def launch(
        self, workflow: WorkflowSpec, ctx: SubmissionContext, port: str, token: str
    ) -> Launch:
        return jupyter_launch("lab", port, token, "/lab")
