"""What the web-app providers share: one port on `$PORT_<n>`, bound to `APP_HOST`, and an
`AppSpec`.

The app's port comes after the ports the workflow asked for (`ports: 1` keeps `$PORT_0` for
the user's own server, as the early docs showed), so with no extra ports it is `$PORT_0`.
"""

from __future__ import annotations

import shlex
from abc import abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

from dstack.models.job import AppSpec, JobSpec, PortSpec
from dstack.models.workflow import WorkflowSpec
from dstack.providers.base import (
    Provider,
    SubmissionContext,
    base_job_spec,
    pip_install_requirements,
    user_ports,
)

# The address apps listen on, as the runner sets it: 0.0.0.0 inside a container (published on
# the host's 127.0.0.1 only), 127.0.0.1 for a plain process: never the host's network.
APP_HOST = '"${DSTACK_APP_HOST:-0.0.0.0}"'


@dataclass(frozen=True)
class Launch:
    """How an app starts: its command, its env, and the path and query of its URL (a token)."""

    command: str
    env: dict[str, str] = field(default_factory=dict)
    url_path: str = "/"
    url_query: dict[str, str] = field(default_factory=dict)


def install_if_missing(package: str) -> str:
    """Install `package` with pip unless the image already has it (saves minutes per run)."""
    name = shlex.quote(package)
    return f"python -m pip show {name} >/dev/null 2>&1 || pip install -q {name}"


class AppProvider(Provider):
    """Requirements, `setup`, installation of the app when missing, then the app itself."""

    packages: ClassVar[tuple[str, ...]] = ()
    needs_token: ClassVar[bool] = False

    def job_spec(self, workflow: WorkflowSpec, ctx: SubmissionContext) -> JobSpec:
        ports = [*user_ports(workflow), PortSpec()]
        port_index = len(ports) - 1
        token = ctx.token_factory() if self.needs_token else ""
        launch = self.launch(workflow, ctx, f"$PORT_{port_index}", token)
        commands = [
            *pip_install_requirements(workflow),
            *workflow.setup,
            *self.install_commands(),
            launch.command,
        ]
        app = AppSpec(
            name=self.name,
            port_index=port_index,
            url_path=launch.url_path,
            url_query=launch.url_query,
        )
        return base_job_spec(
            workflow, ctx, commands=commands, env=launch.env, ports=ports, apps=[app]
        )

    def install_commands(self) -> list[str]:
        return [install_if_missing(p) for p in self.packages]

    @abstractmethod
    def launch(
        self, workflow: WorkflowSpec, ctx: SubmissionContext, port: str, token: str
    ) -> Launch:
        """The app's command; `port` is the shell variable of its port (`$PORT_0`)."""


def served_apps(spec: JobSpec) -> list[AppSpec]:
    """The apps of a job, plus one `port N` app for each port no app uses (`ports: 1` of a
    `bash` workflow serving its own server): what the runner probes and the CLI shows."""
    used = {app.port_index for app in spec.apps}
    extra = [
        AppSpec(name=f"port {index}", port_index=index)
        for index in range(len(spec.ports))
        if index not in used
    ]
    return [*spec.apps, *extra]
