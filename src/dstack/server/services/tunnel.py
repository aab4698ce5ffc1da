"""Which runner port a user's tunnel request names, and whether the user may reach it."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from dstack.models.job import JobStatus
from dstack.server.context import ServerContext
from dstack.server.db.models import JobRow, RunnerRow, RunRow
from dstack.server.principals import Principal
from dstack.tunnel.errors import TunnelError


@dataclass(frozen=True)
class PortTarget:
    """Port `port` (127.0.0.1 on runner `runner_id`) of job `job_index` of run `run_name`."""

    run_name: str
    job_index: int
    job_id: str
    runner_id: str
    port: int

    @property
    def label(self) -> str:
        """How messages to the user name the forwarded port."""
        return f"port {self.port} of run {self.run_name} job {self.job_index}"


async def find_port(
    ctx: ServerContext, principal: Principal, *, run_name: str, job_index: int, port_index: int
) -> PortTarget:
    """The target of `/api/runs/{run_name}/jobs/{job_index}/ports/{port_index}`.

    `TunnelError` with status 404 when the run (or one the user may not see, which looks
    the same), the job or the port does not exist; 409 when the job is not running.
    """
    async with ctx.read() as session:
        repo_id = await session.scalar(select(RunRow.repo_id).where(RunRow.name == run_name))
        if repo_id is None or not principal.can_see(repo_id):
            raise TunnelError(f"run '{run_name}' not found", hint="see `dstack ps -a`", status=404)
        job = await session.scalar(
            select(JobRow).where(JobRow.run_name == run_name, JobRow.index == job_index)
        )
    if job is None:
        raise TunnelError(f"run '{run_name}' has no job {job_index}", status=404)
    where = f"job {job_index} of run {run_name}"
    if job.status != JobStatus.RUNNING or job.runner_id is None:
        raise TunnelError(
            f"{where} is {job.status}; its ports are reachable only while it runs",
            hint=f"see `dstack ps {run_name}`",
            status=409,
        )
    if not 0 <= port_index < len(job.host_ports):
        count = len(job.host_ports)
        raise TunnelError(f"{where} has no port #{port_index} (it has {count})", status=404)
    return PortTarget(run_name, job_index, job.id, job.runner_id, job.host_ports[port_index])


async def runner_exists(ctx: ServerContext, runner_id: str) -> bool:
    async with ctx.read() as session:
        return await session.get(RunnerRow, runner_id) is not None
