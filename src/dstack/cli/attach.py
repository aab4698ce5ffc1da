"""`dstack attach RUN`: follow a run's logs and reach its apps; also what `dstack run` does
while it stays attached.

Where an app is reached is decided in one place, `app_addresses`: a run of the local server
publishes its ports on this machine's 127.0.0.1 (the host ports are the addresses); a run of a
remote server is reached through forwards the server tunnels (`dstack.tunnel.client`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn, Protocol, TextIO

import click

from dstack.cli.context import client_for, remote_named, remote_option
from dstack.cli.follow import RunFollower, exit_code_of, reconnect_for, reconnect_option
from dstack.cli.spinner import Spinner
from dstack.cli.urls import LogRewriter, app_url
from dstack.errors import DstackError
from dstack.providers.app import served_apps

if TYPE_CHECKING:
    from dstack.api.client import Client
    from dstack.cli.urls import LogRewriter
    from dstack.models.job import AppSpec, Job
    from dstack.models.logs import LogEvent
    from dstack.models.run import Run
    from dstack.tunnel.client import PortForwards

# (job index, port index) → `127.0.0.1:PORT`, where this machine reaches that port.
Target = tuple[int, int]
LOCAL_HOST = "127.0.0.1"


class AppAddresses(Protocol):
    """Where this machine reaches the ports of a run's running jobs."""

    def addresses(self, run: Run) -> dict[Target, str]:
        """The address of each port of the run's running jobs reachable now; never raises
        for a port it cannot reach (that port is left out)."""

    def close(self) -> None:
        """Release what `addresses` opened; harmless to call twice."""


class HostPorts:
    """A local run: its ports are published on 127.0.0.1 of this machine."""

    def addresses(self, run: Run) -> dict[Target, str]:
        return {
            (job.index, index): f"{LOCAL_HOST}:{port}"
            for job in run.jobs
            if _running(job)
            for index, port in enumerate(job.host_ports)
        }

    def close(self) -> None:
        pass


class TunnelForwards:
    """A remote run: one set of forwards per running job, opened the first time it is seen
    running, all closed by `close`. A forward that cannot be opened is said once on `say`."""

    def __init__(self, base_url: str, token: str, run_name: str, say: Callable[[str], None]):
        self._base_url, self._token, self._run_name = base_url, token, run_name
        self._say = say
        self._open: dict[int, PortForwards] = {}
        self._addresses: dict[Target, str] = {}
        self._failed: set[int] = set()

    def addresses(self, run: Run) -> dict[Target, str]:
        for job in run.jobs:
            wanted = _running(job) and job.spec.ports
            if wanted and job.index not in self._open and job.index not in self._failed:
                self._forward(job)
        return dict(self._addresses)

    def _forward(self, job: Job) -> None:
        # Imported here: the tunnel client (about 65 ms) only for a remote run's apps.
        from dstack.tunnel.client import ForwardTarget, PortForwards

        targets = [
            ForwardTarget(job_index=job.index, port_index=i) for i in range(len(job.spec.ports))
        ]
        forwards = PortForwards(
            self._base_url, self._token, self._run_name, targets, on_event=self._say
        )
        try:
            local = forwards.start()
        except DstackError as exc:
            self._failed.add(job.index)
            self._say(f"cannot forward the ports of job {job.index}: {exc.message}")
            return
        self._open[job.index] = forwards
        for target, port in local.items():
            self._addresses[(target.job_index, target.port_index)] = f"{LOCAL_HOST}:{port}"

    def close(self) -> None:
        opened, self._open = list(self._open.values()), {}
        for forwards in opened:
            forwards.close()


def app_addresses(run_name: str, *, remote: str | None, err: TextIO) -> AppAddresses:
    """The seam: host ports for a run of the local server (`remote` None), forwards through
    the server for a run of a remote one (`remote` as `client_for` takes it)."""
    if remote is None:
        return HostPorts()

    def say(message: str) -> None:
        err.write(message + "\n")
        err.flush()

    chosen = remote_named(remote)
    return TunnelForwards(chosen.url, chosen.token, run_name, say)


def _running(job: Job) -> bool:
    return job.status.value == "running"


class AppAnnouncer:
    """At each look at the run: says once per app "waiting for APP on port N…" while its job
    runs and the app does not answer yet, then once its URL; keeps the rewriter's ports."""

    def __init__(
        self,
        addresses: AppAddresses,
        rewriter: LogRewriter,
        err: TextIO,
        spinner: Spinner | None = None,
    ) -> None:
        """At a terminal (`spinner` active) the wait is shown by the spinner, not a line."""
        self._addresses = addresses
        self._rewriter = rewriter
        self._err = err
        self._spinner = spinner
        self._waiting: set[str] = set()
        self._announced: set[str] = set()

    def __call__(self, run: Run) -> None:
        addresses = self._addresses.addresses(run)
        for job in run.jobs:
            ports = {
                port: addresses[(job.index, i)]
                for i, port in enumerate(job.host_ports)
                if (job.index, i) in addresses
            }
            if ports:
                self._rewriter.set_ports(job.id, ports)
            if _running(job):
                self._announce(job, addresses, many=len(run.jobs) > 1)
            elif self._spinner is not None and job.id in self._waiting:
                for index in range(len(job.spec.ports)):  # it ended before its apps answered
                    self._spinner.set(f"app {job.id} {index}", None)

    def _announce(self, job: Job, addresses: dict[Target, str], *, many: bool) -> None:
        label = f"{job.workflow_name or job.spec.provider}: " if many else ""
        apps = [a for a in served_apps(job.spec) if a.port_index < len(job.host_ports)]
        if job.apps_ready_at is None:
            if job.id not in self._waiting and job.id not in self._announced:
                self._waiting.add(job.id)
                for app in apps:
                    port = job.host_ports[app.port_index]
                    text = f"{label}waiting for {app_title(job, app)} on port {port}…"
                    if self._spinner is not None and self._spinner.active:
                        self._spinner.set(f"app {job.id} {app.port_index}", text)
                    else:
                        self._write(text)
            return
        if job.id in self._announced:
            return
        reachable = [(a, addresses.get((job.index, a.port_index))) for a in apps]
        if any(address is None for _, address in reachable):
            return  # a forward is not open yet: say it at the next look
        self._announced.add(job.id)
        for app, address in reachable:
            assert address is not None
            if self._spinner is not None:
                self._spinner.set(f"app {job.id} {app.port_index}", None)
            self._write(f"{label}{app_title(job, app)}: {app_url(address, app)}")

    def _write(self, line: str) -> None:
        if self._spinner is not None and self._spinner.active:
            self._spinner.write(line + "\n")
            return
        self._err.write(line + "\n")
        self._err.flush()


def app_title(job: Job, app: AppSpec) -> str:
    """`app 'lab'`; a port no app names is the job's workflow's app (`app 'files'`), with its
    index where the job has several such ports (`app 'files' (port 1)`)."""
    if any(named.name == app.name for named in job.spec.apps):
        return f"app '{app.name}'"
    unnamed = len(job.spec.ports) - len({a.port_index for a in job.spec.apps})
    name = job.workflow_name or job.spec.provider
    return f"app '{name}'" + (f" (port {app.port_index})" if unnamed > 1 else "")


class AttachedView:
    """The hooks `RunFollower` calls: URLs rewritten in the logs, apps announced."""

    def __init__(
        self,
        client: Client,
        run_name: str,
        addresses: AppAddresses,
        err: TextIO,
        known: Run | None = None,
        spinner: Spinner | None = None,
    ):
        """`known`: the run as the caller has it; its jobs that publish no port need no
        look at the run for their URLs."""
        self._client = client
        self._run_name = run_name
        self.rewriter = LogRewriter()
        self.announcer = AppAnnouncer(addresses, self.rewriter, err, spinner)
        self._looked: set[str] = {j.id for j in known.jobs if not j.spec.ports} if known else set()

    def on_run(self, run: Run) -> None:
        self.announcer(run)

    def transform(self, events: list[LogEvent]) -> list[LogEvent]:
        """Rewrite URLs; a job's first lines may come before the follower saw it running,
        so the run is looked at once for each job whose ports are not known yet."""
        unknown = {e.job_id for e in events if not self.rewriter.knows(e.job_id)}
        unknown -= self._looked
        if unknown:
            self.announcer(self._client.get_run(self._run_name))
            self._looked |= unknown  # only once looked at: the server may be away
        return self.rewriter(events)


def attach_run(
    client: Client,
    run: Run,
    *,
    remote: str | None,
    reconnect_timeout: float,
    err: TextIO | None = None,
    runner: bool = False,
    timestamps: bool = False,
) -> Run:
    """Follow `run` until it ends, showing its apps; Ctrl+C asks whether to stop it (at a
    terminal) or detaches. Forwards opened for its apps are closed when this returns.

    While the server is away it reconnects (`follow.reconnect_for`) for up to
    `reconnect_timeout` seconds; the app forwards stay bound meanwhile and each new
    connection goes through the server once it is back. Ctrl+C while reconnecting detaches
    without asking (the run cannot be stopped through an absent server). `runner` and
    `timestamps`: as `dstack logs --runner -t` shows the lines."""
    err = err or sys.stderr
    reconnect = reconnect_for(
        client, run.name, remote=remote, give_up_after=reconnect_timeout, err=err
    )
    addresses = app_addresses(run.name, remote=remote, err=err)
    spinner = Spinner(err)
    view = AttachedView(client, run.name, addresses, err, known=run, spinner=spinner)
    follower = RunFollower(
        client,
        run.name,
        known=run,
        err=err,
        transform=view.transform,
        on_run=view.on_run,
        reconnect=reconnect,
        runner=runner,
        timestamps=timestamps,
        spinner=spinner,
    )
    try:
        while True:
            try:
                return follower.follow()
            except KeyboardInterrupt:
                if reconnect.reconnecting or not _ask_to_stop(client, run.name):
                    _detached(run.name, err)
    finally:
        addresses.close()


def _detached(run_name: str, err: TextIO) -> NoReturn:
    err.write(
        f"\nDetached. The run keeps going: `dstack logs -f {run_name}`,"
        f" `dstack attach {run_name}`, `dstack stop {run_name}`.\n"
    )
    err.flush()
    sys.exit(0)


def _ask_to_stop(client: Client, run_name: str) -> bool:
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        return False
    try:
        stop = click.confirm(f"\nStop the run {run_name}?", default=False, err=True)
    except click.exceptions.Abort:
        return False
    if stop:
        client.stop_run(run_name, abort=False)
        click.echo("Stopping... (Ctrl+C again to detach)", err=True)
    return stop


@click.command()
@remote_option
@click.argument("run_name", metavar="RUN")
@click.option(
    "-t", "--timestamps", is_flag=True, help="Start each line with its time (UTC, ISO 8601)."
)
@click.option(
    "--runner", "show_runner", is_flag=True, help="Also the runner's own messages, on stderr."
)
@reconnect_option
def attach(
    run_name: str,
    remote: str | None,
    reconnect_timeout: float,
    timestamps: bool,
    show_runner: bool,
) -> None:
    """Follow a run's logs again and show the URLs of its apps (until the run ends).

    A server that goes away meanwhile is waited for (see --reconnect-timeout)."""
    client = client_for(remote)
    run = client.get_run(run_name)
    final = attach_run(
        client,
        run,
        remote=remote,
        reconnect_timeout=reconnect_timeout,
        runner=show_runner,
        timestamps=timestamps,
    )
    sys.exit(exit_code_of(final))
