"""The runner's side of runner identity (issue #13): its own credential, kept 0600 and sent
instead of the registration token; a restart that re-authenticates; containers that belong
to one runner of one server, not to a name."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from dstack.api.runner import RunnerClient
from dstack.api.runner_fake import FakeRunnerApi
from dstack.errors import AuthError
from dstack.models.artifacts import StorageAccess
from dstack.models.digests import digest_bytes
from dstack.models.job import JobSpec, JobStatus, PortSpec
from dstack.models.protocol import (
    HeartbeatRequest,
    JobAssignment,
    JobStatusUpdate,
    LogBatch,
    RegisterRunnerRequest,
)
from dstack.models.repo import RepoRef
from dstack.models.resources import HostResources
from dstack.runner.daemon import Closeable, Runner
from dstack.runner.executors import Executor
from dstack.runner.executors.process import ProcessExecutor
from dstack.runner.settings import RunnerSettings

SERVER = "http://team.example:3000"


class Tunnel:
    """Stands in for the tunnel agent: records the credential it was started with."""

    def __init__(self) -> None:
        self.credentials: list[str] = []

    def __call__(
        self, settings: RunnerSettings, runner_id: str, credential: str, allowed: object
    ) -> Closeable:
        self.credentials.append(credential)
        return self

    def close(self) -> None:
        pass


def _settings(work_dir: Path, server_url: str = SERVER, name: str = "box") -> RunnerSettings:
    return RunnerSettings(
        server_url=server_url,
        token="fake-registration-token",
        name=name,
        work_dir=work_dir,
        heartbeat_interval=0.05,
        claim_wait=0.05,
        stop_grace=5,
    )


@contextmanager
def running(
    api: FakeRunnerApi,
    settings: RunnerSettings,
    *,
    executor: Callable[[RunnerSettings], Executor] = lambda _: ProcessExecutor(),
    tunnel: Tunnel | None = None,
) -> Iterator[Runner]:
    """A runner daemon serving `api`, registered, until the block ends."""
    runner = Runner(
        settings,
        api,
        executor,
        resources=lambda: HostResources(cpus=2, memory_mib=4096, disk_mib=1000),
        tunnel=tunnel or Tunnel(),
    )
    failure: list[BaseException] = []

    def run() -> None:
        try:
            runner.run()
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while runner.runner_id is None and thread.is_alive():
        assert time.monotonic() < deadline, "the runner did not register"
        time.sleep(0.01)
    try:
        if failure:
            raise failure[0]
        yield runner
    finally:
        runner.shutdown()
        thread.join(30)
        assert not thread.is_alive()


def _stored(work_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((work_dir / "credential.json").read_text())
    return data


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- the credential file ------------------------------------------------------------------


def test_the_runners_credential_is_stored_0600_with_its_server_and_id(tmp_path: Path) -> None:
    api = FakeRunnerApi()
    previous = os.umask(0)  # even a careless umask makes no world-readable credential
    try:
        with running(api, _settings(tmp_path / "runner")) as runner:
            runner_id = runner.runner_id
    finally:
        os.umask(previous)

    path = tmp_path / "runner" / "credential.json"
    assert _mode(path) == 0o600
    stored = _stored(tmp_path / "runner")
    assert stored == {"server_url": SERVER, "runner_id": runner_id, "runner_token": api.credential}
    assert stored["runner_token"] in api.tokens
    assert "fake-registration-token" not in path.read_text()
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []


def test_a_world_readable_credential_file_is_replaced_by_a_private_one(tmp_path: Path) -> None:
    work_dir = tmp_path / "runner"
    work_dir.mkdir()
    old = work_dir / "credential.json"
    old.write_text(json.dumps({"server_url": SERVER, "runner_id": "x", "runner_token": "gone"}))
    old.chmod(0o644)

    with running(FakeRunnerApi(), _settings(work_dir)):
        pass

    assert _mode(old) == 0o600
    assert _stored(work_dir)["runner_token"] != "gone"


# --- restarts -----------------------------------------------------------------------------


def test_a_restarted_runner_registers_with_its_credential_as_the_same_runner(
    tmp_path: Path,
) -> None:
    api = FakeRunnerApi()
    with running(api, _settings(tmp_path / "runner")) as first:
        first_id = first.runner_id
    stored = _stored(tmp_path / "runner")

    with running(api, _settings(tmp_path / "runner")) as second:
        assert second.runner_id == first_id

    registrations = [token for method, token in api.sent if method == "register"]
    assert registrations == [api.registration_token, stored["runner_token"]]
    assert list(api.tokens.values()) == [first_id]  # no second runner was made
    assert _stored(tmp_path / "runner") == stored


def test_a_credential_of_another_server_is_never_sent_to_this_one(tmp_path: Path) -> None:
    work_dir = tmp_path / "runner"
    with running(FakeRunnerApi(), _settings(work_dir, server_url="http://other:3000")):
        pass
    other = _stored(work_dir)["runner_token"]
    api = FakeRunnerApi()

    with running(api, _settings(work_dir)):
        pass

    assert all(token != other for _, token in api.sent)
    assert [t for m, t in api.sent if m == "register"] == [api.registration_token]
    assert _stored(work_dir)["server_url"] == SERVER


def test_a_revoked_credential_falls_back_to_the_registration_token_once(
    tmp_path: Path,
) -> None:
    api = FakeRunnerApi()
    with running(api, _settings(tmp_path / "runner")) as first:
        first_id = first.runner_id
    revoked = _stored(tmp_path / "runner")["runner_token"]
    assert first_id is not None
    api.revoke(first_id)

    with running(api, _settings(tmp_path / "runner")) as second:
        assert second.runner_id != first_id

    registrations = [token for method, token in api.sent if method == "register"]
    assert registrations == [api.registration_token, revoked, api.registration_token]
    stored = _stored(tmp_path / "runner")
    assert stored["runner_id"] == second.runner_id
    assert stored["runner_token"] not in (revoked, api.registration_token)
    assert _mode(tmp_path / "runner" / "credential.json") == 0o600


def test_a_server_that_lost_its_database_gets_a_fresh_registration(tmp_path: Path) -> None:
    with running(FakeRunnerApi(), _settings(tmp_path / "runner")):
        pass
    old = _stored(tmp_path / "runner")
    fresh = FakeRunnerApi()  # same URL, nothing known

    with running(fresh, _settings(tmp_path / "runner")) as runner:
        assert runner.runner_id in fresh.tokens.values()

    assert [t for m, t in fresh.sent if m == "register"] == [
        old["runner_token"],
        fresh.registration_token,
    ]
    assert _stored(tmp_path / "runner")["runner_token"] in fresh.tokens


def test_when_the_registration_token_is_refused_too_the_runner_stops(tmp_path: Path) -> None:
    api = FakeRunnerApi()
    with running(api, _settings(tmp_path / "runner")) as first:
        assert first.runner_id is not None
        api.revoke(first.runner_id)
    api.rotate_registration_token("rotated")

    runner = Runner(
        _settings(tmp_path / "runner"),
        api,
        lambda _: ProcessExecutor(),
        resources=lambda: HostResources(cpus=1, memory_mib=1024, disk_mib=1000),
        tunnel=Tunnel(),
    )
    with pytest.raises(AuthError):
        runner.run()
    assert len([m for m, _ in api.sent if m == "register"]) == 3  # once more, then no loop


# --- the registration token only registers --------------------------------------------------


def test_after_registering_the_runner_never_sends_the_registration_token(tmp_path: Path) -> None:
    api = FakeRunnerApi()
    tunnel = Tunnel()
    spec = JobSpec(provider="bash", commands=["echo hi"], ports=[PortSpec()])
    with running(api, _settings(tmp_path / "runner"), tunnel=tunnel):
        repo = _repo(api, tmp_path)
        api.assignments.put(
            JobAssignment(job_id="job-1", run_name="r-1", job_index=0, spec=spec, repo=repo)
        )
        assert api.wait_final("job-1").status is JobStatus.DONE

    first, *later = api.sent
    assert first == ("register", api.registration_token)
    assert {"heartbeat", "claim", "post_status", "post_logs", "get_blob"} <= {m for m, _ in later}
    assert {token for _, token in later} == {api.credential}
    assert api.credential != api.registration_token
    assert tunnel.credentials == [api.credential]


def _repo(api: FakeRunnerApi, tmp_path: Path) -> RepoRef:
    """A one-commit repository, served by `api` as a bundle blob."""
    import subprocess

    from dstack.repo import create_bundle

    root = tmp_path / "repo"
    root.mkdir()

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True)
        return done.stdout.strip()

    git("init", "-q")
    git("commit", "-q", "--allow-empty", "-m", "first")
    commit = git("rev-parse", "HEAD")
    create_bundle(root, commit, tmp_path / "code.bundle")
    digest = api.add_blob((tmp_path / "code.bundle").read_bytes())
    return RepoRef(
        repo_id="acme/models",
        commit=commit,
        tree=git("rev-parse", "HEAD^{tree}"),
        bundle_digest=digest,
    )


def test_over_http_every_request_after_registering_carries_the_runners_credential(
    tmp_path: Path,
) -> None:
    """The same over the wire, against a server that issues runner credentials: job reports,
    blob uploads and downloads (HTTP and presigned), clone credentials."""
    seen: list[httpx.Request] = []
    blob = b"bytes"
    digest = digest_bytes(blob)

    def server(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        path = request.url.path
        if path.endswith("/register"):
            return httpx.Response(200, json={"runner_id": "r1", "runner_token": "own"})
        if path.endswith("/heartbeat"):
            return httpx.Response(200, json={})
        if path.endswith("/repo-credentials"):
            return httpx.Response(200, json={"url": "https://git.example/x.git", "kind": "none"})
        if path == "/api/blobs/missing":
            return httpx.Response(200, json={"missing": []})
        if path == "/api/blobs/presign":
            return httpx.Response(200, json={"urls": {}})
        if path.startswith("/api/blobs/"):
            headers = {"content-length": str(len(blob))}
            return httpx.Response(200, content=blob, headers=headers)
        return httpx.Response(204)

    with RunnerClient(
        "http://server", "registration", transport=httpx.MockTransport(server)
    ) as api:
        resources = HostResources(cpus=1, memory_mib=1, disk_mib=1)
        api.register(RegisterRunnerRequest(name="b", host="h", resources=resources, executors=[]))
        api.heartbeat(HeartbeatRequest(running_jobs=[]))
        api.post_status("j1", JobStatusUpdate(status=JobStatus.RUNNING))
        api.post_logs("j1", LogBatch(lines=[]))
        api.get_repo_credentials("j1")
        api.get_blob(digest, tmp_path / "blob")
        api.blob_store(StorageAccess(kind="http")).put_bytes(blob, digest)
        api.blob_store(StorageAccess(kind="presigned")).exists(digest)

    assert seen[0].headers["authorization"] == "Bearer registration"
    assert len(seen) > 8
    assert {r.headers["authorization"] for r in seen[1:]} == {"Bearer own"}
    assert not any("x-dstack-runner-id" in r.headers for r in seen)


# --- Docker: containers belong to a runner of a server, not to a name ----------------------


@pytest.mark.docker
def test_a_second_local_runner_on_the_engine_leaves_the_first_ones_job_running(
    tmp_path: Path,
) -> None:
    """Two local servers (two users, two DSTACK_HOMEs) on one engine: both runners are named
    `local`; starting the second must not remove the first one's container."""
    from dstack.providers.images import ImageSettings
    from dstack.runner.executors.docker import DockerExecutor, docker_client

    _build_test_images()
    client = docker_client(required=True)
    assert client is not None  # required=True: an engine answers, or it raised

    def docker(_: RunnerSettings) -> Executor:
        return DockerExecutor(client, images=ImageSettings(default_image="dstack-test/python:3.11"))

    first_api, second_api = FakeRunnerApi(), FakeRunnerApi()
    spec = JobSpec(provider="bash", commands=["echo started", "sleep 300"])
    first_settings = _settings(tmp_path / "first", server_url="http://127.0.0.1:3000", name="local")
    with running(first_api, first_settings, executor=docker) as first:
        repo = _repo(first_api, tmp_path)
        first_api.assignments.put(
            JobAssignment(job_id="job-1", run_name="r-1", job_index=0, spec=spec, repo=repo)
        )
        first_api.wait_status("job-1", lambda s: s is JobStatus.RUNNING, timeout=60)
        [container] = client.containers.list(
            filters={"label": f"dstack.runner-id={first.runner_id}"}
        )
        assert container.labels["dstack.server-id"] == first_api.server_id

        second_settings = _settings(
            tmp_path / "second", server_url="http://127.0.0.1:3001", name="local"
        )
        with running(second_api, second_settings, executor=docker):
            container.reload()
            assert container.status == "running"
        worker = first.worker("job-1")
        assert worker is not None
        assert worker.is_alive()
        assert not any(u.status.is_finished() for u in first_api.statuses["job-1"])
    client.close()


@pytest.mark.docker
def test_reconcile_removes_only_containers_of_its_runner_and_its_server(tmp_path: Path) -> None:
    """The same runner id on another server, and another runner of the same server, keep
    their containers; a leftover of this runner on this server goes."""
    from dstack.runner.executors import RunnerIdentity
    from dstack.runner.executors.docker import DockerExecutor, docker_client

    _build_test_images()
    client = docker_client(required=True)
    assert client is not None  # required=True: an engine answers, or it raised
    tag = f"t{time.monotonic_ns()}"
    labels = {
        "mine": (f"runner-{tag}", f"server-{tag}"),
        "same_id_other_server": (f"runner-{tag}", f"other-{tag}"),
        "other_runner_same_server": (f"other-{tag}", f"server-{tag}"),
    }
    containers = {
        key: client.containers.run(
            "dstack-test/busybox:latest",
            ["sleep", "300"],
            detach=True,
            labels={
                "dstack.runner-id": runner_id,
                "dstack.server-id": server_id,
                "dstack.job": "old-job",
            },
        )
        for key, (runner_id, server_id) in labels.items()
    }
    try:
        DockerExecutor(client).reconcile(
            RunnerIdentity(runner_id=f"runner-{tag}", server_id=f"server-{tag}"),
            owned_job_ids=set(),
        )
        left = {c.id for c in client.containers.list(all=True)}
        assert containers["mine"].id not in left
        assert containers["same_id_other_server"].id in left
        assert containers["other_runner_same_server"].id in left
    finally:
        from docker.errors import NotFound

        for container in containers.values():
            with contextlib.suppress(NotFound):  # removed by the reconcile already
                container.remove(force=True)
        client.close()


def _build_test_images() -> None:
    import subprocess

    root = Path(__file__).resolve().parents[2]
    subprocess.run(["bash", str(root / "scripts" / "build-test-images.sh")], check=True)


def test_the_local_servers_runner_keeps_its_credential_across_new_ports(tmp_path: Path) -> None:
    """The local server listens on a new port at each start; its runner must sign in as the
    same runner, not register a second `local` one."""
    from dstack.server.local_runner import LocalRunnerSupervisor
    from dstack.server.settings import ServerSettings

    api = FakeRunnerApi()
    work_dir = tmp_path / "home" / "runner"
    with running(api, _settings(work_dir, server_url="http://127.0.0.1:41001")) as first:
        first_id = first.runner_id
    settings = ServerSettings(home=tmp_path / "home", token="admin", port=41002)
    LocalRunnerSupervisor(settings, token=api.registration_token)._keep_credential()

    with running(api, _settings(work_dir, server_url=settings.url)) as second:
        assert second.runner_id == first_id
    assert list(api.tokens.values()) == [first_id]
    assert _mode(work_dir / "credential.json") == 0o600
