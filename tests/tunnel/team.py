"""A real server (uvicorn on a thread) with a runner's records, for tunnel tests.

The server, its database and its API are real; the test plays the runner daemon's HTTP part
(register, claim, report `running` with the app's port) so the job "runs" whatever app
the test started, and the `TunnelAgent` is the real one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from tests.tunnel.apps import serve_asgi

from dstack.api.runner import RunnerClient
from dstack.models.job import JobSpec, JobStatus, PortSpec
from dstack.models.protocol import (
    JobStatusUpdate,
    JobSubmission,
    RegisterRunnerRequest,
    SubmitRunRequest,
)
from dstack.models.repo import RepoRef
from dstack.models.resources import HostResources
from dstack.server.app import create_app
from dstack.server.settings import ServerSettings

ADMIN_TOKEN = "tunnel-admin-token-0123456789"
RUNNER_TOKEN = "tunnel-runner-token-0123456789"
REPO_ID = "github.com/acme/apps"


@dataclass
class Allowed:
    """The runner's `allowed(job_id, port)`: the ports of the jobs it "runs"."""

    pairs: set[tuple[str, int]] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, job_id: str, port: int) -> bool:
        with self.lock:
            return (job_id, port) in self.pairs

    def add(self, job_id: str, port: int) -> None:
        with self.lock:
            self.pairs.add((job_id, port))

    def clear(self) -> None:
        with self.lock:
            self.pairs.clear()


@dataclass
class RunningJob:
    run_name: str
    job_id: str
    index: int
    host_ports: list[int]


class Team:
    """The server at `url` plus one registered runner (`runner_id`, whose own credential is
    `runner.credential`)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.admin = httpx.Client(base_url=url, headers=_auth(ADMIN_TOKEN), timeout=30)
        self.runner = RunnerClient(url, RUNNER_TOKEN, retry_for=5)
        request = RegisterRunnerRequest(
            name="apps-runner",
            host="apps-host",
            resources=HostResources(cpus=4, memory_mib=8192, disk_mib=10240),
            executors=["process"],
        )
        self.runner_id = self.runner.register(request).runner_id
        self.allowed = Allowed()

    def close(self) -> None:
        self.admin.close()
        self.runner.close()

    def run_app(self, *ports_per_job: list[int]) -> list[RunningJob]:
        """Submit a run of one job per `ports_per_job` entry, and let the runner "run"
        each: claimed, then `running` with those host ports (which the agent may dial)."""
        jobs = [
            JobSubmission(
                workflow_name=f"app{i}",
                spec=JobSpec(
                    provider="bash",
                    commands=["python app.py"],
                    ports=[PortSpec() for _ in ports],
                ),
            )
            for i, ports in enumerate(ports_per_job)
        ]
        repo = RepoRef(repo_id=REPO_ID, tree="0" * 40, commit="1" * 40, branch="main")
        body = SubmitRunRequest(repo=repo, workflow_name="app0", jobs=jobs)
        response = self.admin.post("/api/runs", json=body.model_dump(mode="json"))
        assert response.status_code == 201, response.text
        return [self._claim(list(ports_per_job)) for _ in ports_per_job]

    def _claim(self, ports_per_job: list[list[int]]) -> RunningJob:
        assignment = self.runner.claim(10)
        assert assignment is not None, "the runner got no job"
        ports = ports_per_job[assignment.job_index]
        self.runner.post_status(assignment.job_id, JobStatusUpdate(status=JobStatus.DOWNLOADING))
        update = JobStatusUpdate(status=JobStatus.RUNNING, host_ports=ports)
        self.runner.post_status(assignment.job_id, update)
        for port in ports:
            self.allowed.add(assignment.job_id, port)
        return RunningJob(assignment.run_name, assignment.job_id, assignment.job_index, ports)

    def finish(self, job: RunningJob) -> None:
        update = JobStatusUpdate(status=JobStatus.DONE, exit_code=0)
        self.runner.post_status(job.job_id, update)

    def create_user(self, name: str, repos: list[str] | None) -> str:
        response = self.admin.post("/api/users", json={"name": name, "repos": repos})
        assert response.status_code == 201, response.text
        token: str = response.json()["token"]
        return token


@contextmanager
def team_server(home: Path, host: str = "127.0.0.1") -> Iterator[Team]:
    """A server listening on `host`, with its runner registered."""
    settings = ServerSettings(
        home=home,
        token=ADMIN_TOKEN,
        host=host,
        runner_token=RUNNER_TOKEN,
        runner_heartbeat_timeout=600.0,  # the test's "runner" sends no heartbeats
        no_runner_grace_seconds=600.0,
    )
    with serve_asgi(create_app(settings), host=host) as port:
        team = Team(f"http://{host}:{port}")
        try:
            yield team
        finally:
            team.close()


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
