"""Runner identity (issue #13): a runner is whoever holds its own credential, never an id it
sends or a name it claims. Each attack of the issue, plus a varied form, on SQLite and
PostgreSQL, through the HTTP API and the tunnel's WebSockets."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient, WebSocketDenialResponse
from tests.infra.fixtures import postgres  # noqa: F401  (a fixture `db_url` asks for)
from tests.server.conftest import db_url, job, settings, submission  # noqa: F401

from dstack.models.digests import digest_bytes
from dstack.models.job import JobSpec, PortSpec
from dstack.models.protocol import JobSubmission
from dstack.server.app import create_app
from dstack.server.context import ServerContext
from dstack.server.local import ensure_local_server, stop_local_server
from dstack.server.settings import ServerSettings
from dstack.storage.memory import MemoryBlobStore

ADMIN = {"Authorization": "Bearer secret-token"}  # the `settings` fixture's tokens
CONFIGURED = "runner-token"  # a registration token set in the server's settings
HOST = {"cpus": 4, "memory_mib": 8192, "disk_mib": 10240}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Runner:
    id: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return bearer(self.token)


@pytest.fixture
def client(settings: ServerSettings) -> Iterator[TestClient]:  # noqa: F811
    settings.runner_heartbeat_timeout = 600.0  # runners here beat only when a test says so
    with TestClient(create_app(settings, blobs=MemoryBlobStore())) as test_client:
        yield test_client


@pytest.fixture
def minted(client: TestClient) -> str:
    """A registration token made through the API (`dstack runners token`)."""
    answer = client.post("/api/runners/tokens", headers=ADMIN)
    assert answer.status_code == 201, answer.text
    token: str = answer.json()["token"]
    return token


def register(client: TestClient, name: str, token: str = CONFIGURED) -> Runner:
    answer = client.post("/api/runners/register", json=_body(name), headers=bearer(token))
    assert answer.status_code == 200, answer.text
    registered = answer.json()
    assert registered["runner_token"]
    return Runner(registered["runner_id"], registered["runner_token"])


def _body(name: str, **resources: int) -> dict[str, Any]:
    return {"name": name, "host": "h", "resources": {**HOST, **resources}, "executors": ["process"]}


def submit(client: TestClient, *, ports: int = 0) -> str:
    request = submission(job())
    if ports:
        spec = JobSpec(provider="bash", commands=["serve"], ports=[PortSpec()] * ports)
        request = submission(JobSubmission(workflow_name="app", spec=spec))
    answer = client.post("/api/runs", json=request.model_dump(mode="json"), headers=ADMIN)
    assert answer.status_code == 201, answer.text
    name: str = answer.json()["name"]
    return name


def claim(client: TestClient, runner: Runner) -> str:
    path = f"/api/runners/{runner.id}/claim"
    answer = client.post(path, json={"wait_seconds": 5}, headers=runner.auth)
    assert answer.status_code == 200, answer.text
    job_id: str = answer.json()["job_id"]
    return job_id


def report(client: TestClient, runner: Runner, job_id: str, status: str, **fields: Any) -> int:
    body = {"status": status, **fields}
    return client.post(f"/api/jobs/{job_id}/status", json=body, headers=runner.auth).status_code


def heartbeat(client: TestClient, runner: Runner, running: list[str] | None = None) -> Any:
    body = {"running_jobs": running or []}
    return client.post(f"/api/runners/{runner.id}/heartbeat", json=body, headers=runner.auth)


def job_of(client: TestClient, run_name: str) -> dict[str, Any]:
    answer = client.get(f"/api/runs/{run_name}", headers=ADMIN)
    assert answer.status_code == 200, answer.text
    jobs: list[dict[str, Any]] = answer.json()["jobs"]
    return jobs[0]


def manifest(client: TestClient, runner: Runner, content: bytes) -> dict[str, Any]:
    """A manifest of one file whose blob the runner uploaded."""
    digest = digest_bytes(content)
    put = client.put(f"/api/blobs/{digest}", content=content, headers=runner.auth)
    assert put.status_code == 204, put.text
    file = {"path": "model.bin", "size": len(content), "mode": 0o644, "digest": digest}
    return {"path": "out", "files": [file]}


def reports(
    client: TestClient, runner: Runner, job_id: str, files: dict[str, Any]
) -> dict[str, int]:
    """What a runner may say about a job: the status code of each kind of report."""
    line = {"seq": 0, "timestamp": datetime.now(UTC).isoformat(), "stream": "stdout"}
    logs = {"lines": [{**line, "data": "planted\n"}]}
    posts = {"logs": logs, "artifacts": files, "caches": {**files, "path": "~/.cache/pip"}}
    codes = {
        kind: client.post(f"/api/jobs/{job_id}/{kind}", json=body, headers=runner.auth).status_code
        for kind, body in posts.items()
    }
    codes["status"] = report(client, runner, job_id, "done", exit_code=0)
    return codes


FORBIDDEN = {"logs": 403, "artifacts": 403, "caches": 403, "status": 403}


def untouched(client: TestClient, run_name: str) -> None:
    """No log line, no artifact and no cache of an attacker reached the run."""
    logs = client.get(f"/api/runs/{run_name}/logs", headers=ADMIN).json()
    assert [e["data"] for e in logs["events"]] == []
    assert client.get(f"/api/runs/{run_name}/artifacts", headers=ADMIN).json() == []


# --- a runner is its credential -------------------------------------------------------------
def test_a_runner_cannot_heartbeat_or_claim_as_another(client: TestClient) -> None:
    a, b = register(client, "a"), register(client, "b")
    run_name = submit(client)

    beat = heartbeat(client, Runner(b.id, a.token))
    taken = client.post(f"/api/runners/{b.id}/claim", json={"wait_seconds": 0}, headers=a.auth)
    # The header the runner protocol used to name the runner changes nothing.
    spoofed = {**a.auth, "X-Dstack-Runner-Id": b.id}
    again = client.post(f"/api/runners/{b.id}/claim", json={"wait_seconds": 0}, headers=spoofed)

    assert [beat.status_code, taken.status_code, again.status_code] == [403, 403, 403]
    assert f"belongs to runner {a.id}, not to {b.id}" in taken.json()["error"]["message"]
    assert job_of(client, run_name)["status"] in ("submitted", "pending")  # nobody claimed it
    assert claim(client, b)  # B's own credential still claims it


def test_a_runner_cannot_report_on_a_job_another_runner_holds(client: TestClient) -> None:
    a, b = register(client, "a"), register(client, "b")
    run_name = submit(client)
    job_id = claim(client, b)
    assert report(client, b, job_id, "running") == 204

    assert reports(client, a, job_id, manifest(client, a, b"poison")) == FORBIDDEN
    # The old way of naming the runner, a header, changes nothing.
    spoofed = Runner(b.id, a.token)
    assert report(client, spoofed, job_id, "failed", exit_code=1) == 403

    assert job_of(client, run_name)["status"] == "running"
    untouched(client, run_name)


def test_a_runner_cannot_report_on_its_own_job_once_it_is_final(client: TestClient) -> None:
    a = register(client, "a")
    run_name = submit(client)
    job_id = claim(client, a)
    assert report(client, a, job_id, "running") == 204
    assert report(client, a, job_id, "failed", exit_code=3) == 204

    # The same final report again (its answer was lost on the way) is a harmless no-op.
    assert report(client, a, job_id, "failed", exit_code=3) == 204
    assert reports(client, a, job_id, manifest(client, a, b"late")) == FORBIDDEN
    assert report(client, a, job_id, "running") == 403

    final = job_of(client, run_name)
    assert (final["status"], final["exit_code"]) == ("failed", 3)
    untouched(client, run_name)


def test_reports_on_an_unknown_job_are_404(client: TestClient) -> None:
    a = register(client, "a")

    codes = reports(client, a, "no-such-job", manifest(client, a, b"x"))
    credentials = client.get("/api/jobs/no-such-job/repo-credentials", headers=a.auth)

    assert codes == {"logs": 404, "artifacts": 404, "caches": 404, "status": 404}
    assert credentials.status_code == 404


# --- registration tokens only register ------------------------------------------------------
@pytest.mark.parametrize("kind", ["configured", "minted"])
def test_a_registration_token_only_registers(client: TestClient, minted: str, kind: str) -> None:
    token = CONFIGURED if kind == "configured" else minted
    holder = register(client, "holder")
    run_name = submit(client)
    job_id = claim(client, holder)
    intruder = Runner(holder.id, token)
    digest = digest_bytes(b"blob")

    codes = {
        "heartbeat": heartbeat(client, intruder).status_code,
        "claim": client.post(
            f"/api/runners/{holder.id}/claim", json={"wait_seconds": 0}, headers=bearer(token)
        ).status_code,
        **reports(client, intruder, job_id, manifest(client, holder, b"blob")),
        "clone": client.get(
            f"/api/jobs/{job_id}/repo-credentials", headers=bearer(token)
        ).status_code,
        "blob head": client.head(f"/api/blobs/{digest}", headers=bearer(token)).status_code,
        "blob get": client.get(f"/api/blobs/{digest}", headers=bearer(token)).status_code,
        "blob put": client.put(
            f"/api/blobs/{digest}", content=b"blob", headers=bearer(token)
        ).status_code,
        "blobs missing": client.post(
            "/api/blobs/missing", json={"digests": [digest]}, headers=bearer(token)
        ).status_code,
    }

    assert codes == dict.fromkeys(codes, 403)
    refused = client.post(f"/api/runners/{holder.id}/claim", json={}, headers=bearer(token))
    assert "a registration token only registers a runner" in refused.json()["error"]["message"]
    assert job_of(client, run_name)["status"] == "provisioning"
    untouched(client, run_name)


# --- a name is not an identity --------------------------------------------------------------
@pytest.mark.parametrize("kind", ["configured", "minted"])
def test_registering_a_taken_name_is_refused_and_its_runner_keeps_its_job(
    client: TestClient, minted: str, kind: str
) -> None:
    token = CONFIGURED if kind == "configured" else minted
    gpu = register(client, "gpu")
    run_name = submit(client)
    job_id = claim(client, gpu)
    assert report(client, gpu, job_id, "running") == 204

    taken = client.post("/api/runners/register", json=_body("gpu", cpus=64), headers=bearer(token))

    assert taken.status_code == 409
    error = taken.json()["error"]
    assert error["message"] == "runner name 'gpu' is taken by another runner"
    assert "dstack runners rm gpu" in error["hint"]
    assert job_of(client, run_name)["status"] == "running"
    [listed] = client.get("/api/runners", headers=ADMIN).json()
    assert (listed["id"], listed["resources"]["cpus"], listed["running_jobs"]) == (
        gpu.id,
        4,
        [job_id],
    )
    beat = heartbeat(client, gpu, [job_id])
    assert beat.json()["forget_jobs"] == []


def test_a_runner_restarting_with_its_credential_keeps_its_id(client: TestClient) -> None:
    first = client.post("/api/runners/register", json=_body("box"), headers=bearer(CONFIGURED))
    box = Runner(first.json()["runner_id"], first.json()["runner_token"])
    run_name = submit(client)
    claim(client, box)

    again = client.post("/api/runners/register", json=_body("box", cpus=8), headers=box.auth)

    assert again.status_code == 200
    answer = again.json()
    assert (answer["runner_id"], answer["runner_token"]) == (box.id, None)
    assert answer["server_id"] == first.json()["server_id"] != ""
    kept = job_of(client, run_name)  # the restarted runner finishes it, then reports it
    assert kept["status"] not in ("failed", "done")
    assert kept["runner_id"] == box.id
    [listed] = client.get("/api/runners", headers=ADMIN).json()
    assert (listed["id"], listed["resources"]["cpus"]) == (box.id, 8)
    beat = heartbeat(client, box)
    assert beat.status_code == 200


def test_each_registration_is_a_new_runner_with_its_own_credential(client: TestClient) -> None:
    a, b = register(client, "a"), register(client, "b")

    assert a.id != b.id
    assert a.token != b.token
    assert CONFIGURED not in (a.token, b.token)
    ctx: ServerContext = client.app.state.ctx  # type: ignore[attr-defined]
    assert ctx.server_id is not None


# --- removal revokes ------------------------------------------------------------------------
def test_a_removed_runners_credential_is_refused(client: TestClient) -> None:
    old = register(client, "old")
    run_name = submit(client)
    job_id = claim(client, old)
    assert report(client, old, job_id, "running") == 204

    user = client.post("/api/users", json={"name": "bob"}, headers=ADMIN).json()["token"]
    assert client.delete("/api/runners/old", headers=bearer(user)).status_code == 403
    assert client.delete("/api/runners/old", headers=old.auth).status_code == 403
    removed = client.delete("/api/runners/old", headers=ADMIN)

    assert removed.status_code == 204
    beat = heartbeat(client, old)
    restart = client.post("/api/runners/register", json=_body("old"), headers=old.auth)
    assert (beat.status_code, beat.content) == (401, b"")
    assert restart.status_code == 401
    assert report(client, old, job_id, "done", exit_code=0) == 401
    lost = job_of(client, run_name)
    assert (lost["status"], lost["reason"]) == ("failed", "runner_lost")
    assert lost["message"] == "runner 'old' was removed"
    assert client.get("/api/runners", headers=ADMIN).json() == []
    assert register(client, "old").id != old.id  # the name is free again
    assert client.delete("/api/runners/nobody", headers=ADMIN).status_code == 404


# --- the tunnel -----------------------------------------------------------------------------
def _refused(client: TestClient, path: str, headers: dict[str, str]) -> int:
    with (
        pytest.raises(WebSocketDenialResponse) as denied,
        client.websocket_connect(path, headers=headers),
    ):
        pass
    return denied.value.status_code


def test_a_runner_cannot_take_over_another_runners_tunnel(client: TestClient) -> None:
    a, b = register(client, "a"), register(client, "b")
    run_name = submit(client, ports=1)
    job_id = claim(client, b)
    assert report(client, b, job_id, "running", host_ports=[40123]) == 204

    with client.websocket_connect(f"/api/runners/{b.id}/tunnel", headers=b.auth) as link:
        codes = [
            _refused(client, f"/api/runners/{b.id}/tunnel", a.auth),
            _refused(client, f"/api/runners/{b.id}/tunnel", bearer(CONFIGURED)),
            _refused(client, f"/api/runners/{b.id}/tunnel/some-conn", a.auth),
        ]
        assert codes == [403, 403, 403]
        # B's connection is still the one the server uses: a user's forward reaches it.
        forward = _Forward(client, f"/api/runs/{run_name}/jobs/0/ports/0")
        request = link.receive_json()
        assert (request["job_id"], request["port"]) == (job_id, 40123)
        link.send_json({"type": "refused", "conn_id": request["conn_id"], "message": "not now"})
        assert forward.status() == 502


class _Forward:
    """A user's port forward, opened on a thread (it waits for the runner's answer)."""

    def __init__(self, client: TestClient, path: str) -> None:
        self._codes: list[int] = []
        self._thread = threading.Thread(target=self._open, args=(client, path), daemon=True)
        self._thread.start()

    def _open(self, client: TestClient, path: str) -> None:
        self._codes.append(_refused(client, path, ADMIN))

    def status(self) -> int:
        self._thread.join(timeout=30)
        assert self._codes, "the forward got no answer"
        return self._codes[0]


# --- through the CLI ------------------------------------------------------------------------
def test_dstack_runners_rm_revokes_a_runner(tmp_path: Path) -> None:
    home = tmp_path / "home"
    url, _ = ensure_local_server(home, start_runner=False)
    try:
        minted = _cli(home, "runners", "token")[1].strip()
        body = _body("stolen-box")
        answer = httpx.post(f"{url}/api/runners/register", json=body, headers=bearer(minted))
        runner = Runner(answer.json()["runner_id"], answer.json()["runner_token"])
        beat = f"{url}/api/runners/{runner.id}/heartbeat"
        assert httpx.post(beat, json={"running_jobs": []}, headers=runner.auth).status_code == 200

        removed = _cli(home, "runners", "rm", "stolen-box")
        again = _cli(home, "runners", "rm", "stolen-box")

        assert removed == (0, "Removed runner stolen-box\n")
        assert again[0] == 1
        assert again[1].splitlines() == [
            "Error: runner 'stolen-box' not found",
            "Hint: see `dstack runners`",
        ]
        assert httpx.post(beat, json={"running_jobs": []}, headers=runner.auth).status_code == 401
        assert "stolen-box" not in _cli(home, "runners")[1]
    finally:
        stop_local_server(home)


def _cli(home: Path, *args: str) -> tuple[int, str]:
    """Run `dstack ARGS` as a user does; its exit code and what it printed (both streams)."""
    env = {**os.environ, "DSTACK_HOME": str(home)}
    done = subprocess.run(
        [sys.executable, "-m", "dstack", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr
