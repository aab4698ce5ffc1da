"""The runner daemon starts its tunnel once registered, lets it dial only the host ports of
jobs running on it, and closes it on shutdown."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.runner.conftest import FakeRunnerApi

from dstack.models.job import JobSpec, JobStatus, PortSpec
from dstack.models.protocol import HeartbeatResponse, JobAssignment
from dstack.models.repo import RepoRef
from dstack.models.resources import HostResources
from dstack.runner.daemon import Closeable, Runner
from dstack.runner.executors.process import ProcessExecutor
from dstack.runner.settings import RunnerSettings


@dataclass
class FakeTunnel:
    """Stands in for `TunnelAgent`: records how the daemon set it up and closed it."""

    runner_id: str | None = None
    credential: str | None = None
    allowed: Callable[[str, int], bool] | None = None
    closed: threading.Event = field(default_factory=threading.Event)

    def __call__(
        self,
        settings: RunnerSettings,
        runner_id: str,
        credential: str,
        allowed: Callable[[str, int], bool],
    ) -> Closeable:
        self.runner_id, self.credential, self.allowed = runner_id, credential, allowed
        return self

    def close(self) -> None:
        self.closed.set()


def test_the_tunnel_may_dial_only_ports_of_running_jobs(
    tmp_path: Path, fake_api: FakeRunnerApi, repo_ref: RepoRef
) -> None:
    tunnel = FakeTunnel()
    settings = RunnerSettings(
        server_url="http://server",
        token="t",
        name="box",
        work_dir=tmp_path / "runner",
        heartbeat_interval=0.05,
        claim_wait=0.05,
        stop_grace=2,
    )
    runner = Runner(
        settings,
        fake_api,
        lambda _: ProcessExecutor(),
        resources=lambda: HostResources(cpus=2, memory_mib=4096, disk_mib=1000),
        tunnel=tunnel,
    )
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        spec = JobSpec(provider="bash", commands=["sleep 60"], ports=[PortSpec(), PortSpec()])
        fake_api.assignments.put(
            JobAssignment(
                job_id="job-1", run_name="wise-cat-1", job_index=0, spec=spec, repo=repo_ref
            )
        )
        running = fake_api.wait_status("job-1", lambda status: status is JobStatus.RUNNING)
        assert tunnel.runner_id == "runner-1"
        # The tunnel dials with the runner's own credential, never the registration token.
        assert tunnel.credential == fake_api.credential
        assert tunnel.credential in fake_api.tokens
        assert tunnel.allowed is not None
        ports = running.host_ports or []
        assert len(ports) == 2
        assert all(tunnel.allowed("job-1", port) for port in ports)
        assert not tunnel.allowed("job-2", ports[0])  # not a job of this runner
        assert not tunnel.allowed("job-1", max(ports) + 1)  # not one of the job's ports
        fake_api.answers.put(HeartbeatResponse(stop_jobs=["job-1"]))
        fake_api.wait_final("job-1")
        deadline = time.monotonic() + 20
        while tunnel.allowed("job-1", ports[0]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not tunnel.allowed("job-1", ports[0])  # the job ended
    finally:
        runner.shutdown()
        thread.join(20)
    assert tunnel.closed.is_set()
