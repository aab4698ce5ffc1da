"""App readiness on the runner: the probe, and the `apps_ready` report of a running job."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.runner.conftest import FakeRunnerApi

from dstack.models.job import AppSpec, JobSpec, JobStatus, PortSpec
from dstack.models.protocol import JobAssignment
from dstack.models.repo import RepoRef
from dstack.models.resources import HostResources
from dstack.runner.apps import AppProbe, ProbeTarget, answers, probe_targets
from dstack.runner.daemon import Runner
from dstack.runner.environment import free_port
from dstack.runner.executors.process import ProcessExecutor
from dstack.runner.settings import RunnerSettings


class _Forbidden(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(403)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def _serve(port: int) -> http.server.HTTPServer:
    server = http.server.HTTPServer(("127.0.0.1", port), _Forbidden)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_the_targets_are_the_apps_and_the_ports_no_app_uses() -> None:
    spec = JobSpec(
        provider="lab",
        ports=[PortSpec(), PortSpec()],
        apps=[AppSpec(name="lab", port_index=1, url_path="/lab")],
    )

    assert probe_targets(spec, [5001, 5002]) == [
        ProbeTarget(name="lab", port=5002, url_path="/lab"),
        ProbeTarget(name="port 0", port=5001),
    ]


def test_any_http_answer_counts_and_a_closed_port_does_not() -> None:
    port = free_port()
    assert not answers(ProbeTarget("app", port))
    server = _serve(port)
    try:
        assert answers(ProbeTarget("app", port, "/lab"))
    finally:
        server.shutdown()
        server.server_close()


def test_the_probe_reports_once_when_every_app_answers() -> None:
    ports = [free_port(), free_port()]
    reported: list[str] = []
    probe = AppProbe(
        [ProbeTarget("a", ports[0]), ProbeTarget("b", ports[1])],
        lambda: reported.append("ready"),
        interval=0.01,
        max_interval=0.05,
    ).start()
    servers = [_serve(ports[0])]
    try:
        assert not probe.ready.wait(0.3)  # one of two answers: not ready yet
        servers.append(_serve(ports[1]))
        assert probe.ready.wait(10)
        assert probe.join(10)
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
    assert reported == ["ready"]


def test_a_stopped_probe_never_reports() -> None:
    reported: list[str] = []
    probe = AppProbe([ProbeTarget("a", free_port())], lambda: reported.append("ready")).start()

    probe.stop()

    assert probe.join(10)
    assert reported == []
    assert not probe.ready.is_set()


@pytest.fixture
def runner(tmp_path: Path, fake_api: FakeRunnerApi) -> Iterator[Runner]:
    settings = RunnerSettings(
        server_url="http://server",
        token="t",
        name="box-1",
        work_dir=tmp_path / "runner",
        heartbeat_interval=0.05,
        claim_wait=0.05,
        stop_grace=5,
    )
    runner = Runner(
        settings,
        fake_api,
        lambda _: ProcessExecutor(),
        resources=lambda: HostResources(cpus=2, memory_mib=4096, disk_mib=1000),
    )
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    yield runner
    runner.shutdown()
    thread.join(20)


# Serves one request (the probe's), then lingers so the report is made while it runs.
SERVE_ONCE = (
    "python -c 'import http.server as h, os;"
    ' h.HTTPServer(("127.0.0.1", int(os.environ["PORT_0"])),'
    " h.SimpleHTTPRequestHandler).handle_request()' && sleep 1"
)


def _assign(repo: RepoRef, command: str) -> JobAssignment:
    spec = JobSpec(provider="bash", commands=[command], ports=[PortSpec()])
    return JobAssignment(job_id="job-1", run_name="wise-cat-1", job_index=0, spec=spec, repo=repo)


@pytest.mark.usefixtures("runner")
def test_a_job_whose_app_answers_is_reported_ready_while_running(
    fake_api: FakeRunnerApi, repo_ref: RepoRef
) -> None:
    fake_api.assignments.put(_assign(repo_ref, SERVE_ONCE))

    assert fake_api.wait_final("job-1").status is JobStatus.DONE
    reports = [(u.status, u.apps_ready) for u in fake_api.statuses["job-1"]]
    assert reports == [
        (JobStatus.DOWNLOADING, None),
        (JobStatus.RUNNING, None),
        (JobStatus.RUNNING, True),
        (JobStatus.DONE, None),
    ]


@pytest.mark.usefixtures("runner")
def test_a_job_whose_app_never_answers_runs_to_its_end(
    fake_api: FakeRunnerApi, repo_ref: RepoRef
) -> None:
    fake_api.assignments.put(_assign(repo_ref, "sleep 0.5"))

    assert fake_api.wait_final("job-1").status is JobStatus.DONE
    assert all(u.apps_ready is None for u in fake_api.statuses["job-1"])
