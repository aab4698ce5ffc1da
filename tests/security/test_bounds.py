"""Bounded input: a request is authenticated before its body is read, its body has a size
limit (413), names follow one rule, secret values and integers have bounds (422), duplicate
ids are a 409, and no request a client can make ends in a 500."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.api.conftest import LiveServer, live_server
from tests.server.conftest import (
    anyio_backend,
    clock,
    db_url,
    job,
    postgres,
    settings,
    submission,
)

from dstack.api.client import Client
from dstack.errors import ConfigError, NotFoundError
from dstack.models.digests import digest_bytes
from dstack.models.names import check_name, url_segment
from dstack.server.app import create_app
from dstack.server.settings import ServerSettings
from dstack.storage.memory import MemoryBlobStore

__all__ = ["anyio_backend", "clock", "db_url", "live_server", "postgres", "settings"]

pytestmark = pytest.mark.anyio
AUTH = {"Authorization": "Bearer secret-token"}
JSON = {"content-type": "application/json"}
MiB = 1 << 20
RUNNER = {
    "name": "r1",
    "host": "h",
    "resources": {"cpus": 2, "memory_mib": 4096, "disk_mib": 4096},
    "executors": ["process"],
}
REPO = {"repo_id": "github.com/acme/models", "tree": "0" * 40}
BAD_NAMES = [
    ".",
    "..",
    "a\nb",
    "x" * 100_000,
    "a/b",
    "-rf",
    " spaced",
    "\uff46\uff55\uff4c\uff4c",  # fullwidth look-alike letters
    "zero\u200bwidth",
    "\u202erlo",  # right-to-left override
    "nul\x00",
]


class CountingBody:
    """A chunked request body that records how much of it the server pulled."""

    def __init__(self, total: int, chunk: int = MiB, first: bytes = b'{"name": "') -> None:
        self.total, self.chunk, self.first, self.sent = total, chunk, first, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.sent < self.total:
            piece = self.first if self.sent == 0 else b"x" * self.chunk
            self.sent += len(piece)
            yield piece


@dataclasses.dataclass
class Server:
    http: httpx.AsyncClient
    settings: ServerSettings


async def _serve(settings: ServerSettings) -> AsyncIterator[Server]:
    app = create_app(settings, blobs=MemoryBlobStore())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield Server(client, settings)


@pytest.fixture
async def server(settings: ServerSettings) -> AsyncIterator[Server]:
    async for item in _serve(settings):
        yield item


@pytest.fixture
async def small_blobs(settings: ServerSettings) -> AsyncIterator[Server]:
    async for item in _serve(dataclasses.replace(settings, max_blob_bytes=MiB)):
        yield item


async def _runner(http: httpx.AsyncClient) -> tuple[str, dict[str, str]]:
    """A registered runner's id and the headers its later requests carry."""
    answer = await http.post(
        "/api/runners/register", json=RUNNER, headers={"Authorization": "Bearer runner-token"}
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    token = body.get("runner_token") or "runner-token"
    headers = {"Authorization": f"Bearer {token}", "X-Dstack-Runner-Id": body["runner_id"]}
    return body["runner_id"], headers


async def _claimed_job(http: httpx.AsyncClient) -> tuple[str, dict[str, str]]:
    """A job a runner holds (running), and that runner's headers."""
    body = submission().model_dump(mode="json")
    submitted = await http.post("/api/runs", json=body, headers=AUTH)
    assert submitted.status_code == 201, submitted.text
    runner_id, headers = await _runner(http)
    claim = await http.post(
        f"/api/runners/{runner_id}/claim", json={"wait_seconds": 5}, headers=headers
    )
    assert claim.status_code == 200, claim.text
    job_id = claim.json()["job_id"]
    running = await http.post(
        f"/api/jobs/{job_id}/status", json={"status": "running"}, headers=headers
    )
    assert running.status_code == 204, running.text
    return job_id, headers


def _lines(seqs: list[int], data: str = "hello\n") -> dict[str, Any]:
    now = datetime.now(UTC).isoformat()
    return {"lines": [{"seq": s, "timestamp": now, "stream": "stdout", "data": data} for s in seqs]}


# --- authentication before the body ----------------------------------------------------------


async def test_an_unauthenticated_50mb_body_gets_401_unread(server: Server) -> None:
    body = CountingBody(50 * MiB)

    answer = await server.http.post("/api/runs", content=body, headers=JSON)

    assert answer.status_code == 401
    assert answer.content == b""
    assert body.sent <= len(body.first)  # at most what the transport sent before asking


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/api/jobs/some-job/logs", {}),
        ("/api/secrets", {"Authorization": "Bearer wrong"}),
        ("/api/runners/register", {"Authorization": "secret-token"}),  # no scheme
    ],
)
async def test_malformed_bodies_without_a_valid_token_get_401_not_422(
    server: Server, path: str, headers: dict[str, str]
) -> None:
    answer = await server.http.post(path, content=b"{" * (5 * MiB), headers={**JSON, **headers})

    assert (answer.status_code, answer.content) == (401, b"")


async def test_health_needs_no_token_and_unknown_paths_need_one(server: Server) -> None:
    assert (await server.http.get("/api/health")).status_code == 200
    assert (await server.http.get("/api/nothing-here")).status_code == 401
    assert (await server.http.get("/openapi.json")).status_code == 401
    missing = await server.http.get("/api/nothing-here", headers=AUTH)
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")


def test_over_a_socket_the_same_holds_for_both_body_forms(live_server: LiveServer) -> None:
    big = b"[" * (50 * MiB)

    def chunks() -> Iterator[bytes]:
        yield big[: 8 * MiB]
        yield big[8 * MiB :]

    with httpx.Client(base_url=live_server.url) as http:
        assert http.post("/api/runs", content=big, headers=JSON).status_code == 401
        assert http.post("/api/runs", content=chunks(), headers=JSON).status_code == 401
        auth = {"Authorization": f"Bearer {live_server.token}", **JSON}
        sized = http.post("/api/tags", content=big, headers=auth)
        chunked = http.post("/api/tags", content=chunks(), headers=auth)
    assert (sized.status_code, chunked.status_code) == (413, 413)
    assert "larger than 1 MiB, the limit of POST /api/tags" in sized.json()["error"]["message"]


# --- body limits ---------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["content-length", "chunked"])
async def test_a_body_past_the_default_limit_is_413(server: Server, form: str) -> None:
    payload = json.dumps({"name": "t", "run_name": "x" * (2 * MiB)}).encode()
    content: Any = payload if form == "content-length" else CountingBody(2 * MiB)

    answer = await server.http.post("/api/tags", content=content, headers={**AUTH, **JSON})

    assert answer.status_code == 413
    error = answer.json()["error"]
    assert error["code"] == "too_large"
    assert "larger than 1 MiB" in error["message"]


async def test_log_batches_are_bounded_at_4_mib(server: Server) -> None:
    job_id, headers = await _claimed_job(server.http)
    url = f"/api/jobs/{job_id}/logs"

    fits = await server.http.post(url, json=_lines([0], "x" * (3 * MiB)), headers=headers)
    past = await server.http.post(url, json=_lines([1], "x" * (5 * MiB)), headers=headers)
    chunked = await server.http.post(
        url, content=CountingBody(50 * MiB), headers={**headers, **JSON}
    )

    assert fits.status_code == 204, fits.text
    assert (past.status_code, chunked.status_code) == (413, 413)
    assert "4 MiB" in past.json()["error"]["message"]


async def test_blob_uploads_are_unbounded_by_default(server: Server) -> None:

    data = b"b" * (3 * MiB)
    digest = digest_bytes(data)

    answer = await server.http.put(f"/api/blobs/{digest}", content=data, headers=AUTH)

    assert answer.status_code == 204


async def test_blob_uploads_are_bounded_by_the_setting(small_blobs: Server) -> None:

    data = b"b" * (2 * MiB)
    digest = digest_bytes(data)

    async def chunks() -> AsyncIterator[bytes]:
        yield data[:MiB]
        yield data[MiB:]

    sized = await small_blobs.http.put(f"/api/blobs/{digest}", content=data, headers=AUTH)
    streamed = await small_blobs.http.put(f"/api/blobs/{digest}", content=chunks(), headers=AUTH)

    assert (sized.status_code, streamed.status_code) == (413, 413)
    assert (await small_blobs.http.head(f"/api/blobs/{digest}", headers=AUTH)).status_code == 404


# --- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BAD_NAMES, ids=lambda n: ascii(n[:12]))
async def test_bad_tag_names_are_refused(server: Server, name: str) -> None:
    answer = await server.http.post(
        "/api/tags", json={"name": name, "run_name": "wise-owl-1"}, headers=AUTH
    )

    assert answer.status_code == 422
    assert "invalid tag name" in answer.json()["error"]["message"]
    assert (await server.http.get("/api/tags", headers=AUTH)).json() == []


@pytest.mark.parametrize(
    "name", ["..", "x" * 101, "tag\u200b", "\uff56\uff11"], ids=lambda n: ascii(n[:12])
)
async def test_bad_names_are_refused_wherever_a_name_is_made(server: Server, name: str) -> None:
    run = submission().model_dump(mode="json")
    tagged_run = {**run, "tag": name}
    named_workflow = {**run, "workflow_name": name}
    creations = [
        ("/api/runs", tagged_run, "tag"),
        ("/api/runs", named_workflow, "workflow"),
        ("/api/runs/plan", named_workflow, "workflow"),
        ("/api/users", {"name": name}, "user"),
        ("/api/secrets", {"name": name, "value": "v"}, "secret"),
        ("/api/runners/register", {**RUNNER, "name": name}, "runner"),
    ]
    for path, body, kind in creations:
        token = "runner-token" if "runners" in path else "secret-token"
        answer = await server.http.post(
            path, json=body, headers={"Authorization": f"Bearer {token}"}
        )
        assert answer.status_code == 422, (path, answer.text)
        assert f"invalid {kind} name" in answer.json()["error"]["message"], path
    assert (await server.http.get("/api/runs", headers=AUTH)).json() == []


@pytest.mark.parametrize("name", ["train", "train-mnist", "download_model", "v1.2", "a@b.com"])
async def test_names_people_use_are_accepted(name: str) -> None:
    assert check_name(name, "workflow") == name


@pytest.mark.parametrize("name", ["MY-KEY", "1ABC", "A B", "ÄPI_KEY", "A" * 101])
async def test_secret_names_are_environment_variable_names(server: Server, name: str) -> None:
    answer = await server.http.post("/api/secrets", json={"name": name, "value": "v"}, headers=AUTH)

    assert answer.status_code == 422
    with pytest.raises(ConfigError, match="invalid secret name"):
        check_name(name, "secret")


def _plant_tag(settings: ServerSettings, name: str) -> None:
    """A tag stored before names had a rule (SQLite), on a run of its own."""
    now = datetime.now(UTC).isoformat()
    with sqlite3.connect(settings.server_dir / "db.sqlite") as db:
        run = f"old-run-{abs(hash(name)) % 10_000}"
        repo = json.dumps({"repo_id": "r", "tree": "0" * 40})
        db.execute(
            "INSERT INTO runs (name, name_prefix, name_counter, repo_id, repo, workflow_name,"
            " provider, args, variables, tag, user, submitted_at)"
            " VALUES (?, 'old-run', 1, 'r', ?, NULL, NULL, '[]', '{}', NULL, 'alice', ?)",
            (run, repo, now),
        )
        db.execute(
            "INSERT INTO tags (name, run_name, repo_id, workflow_name, created_at)"
            " VALUES (?, ?, 'r', NULL, ?)",
            (name, run, now),
        )


LEGACY_TAGS = [".", "..", "a\nb", "50%?#x", "\u00fcn\u00ef code", "x" * 100_000]


@pytest.mark.parametrize("name", LEGACY_TAGS, ids=lambda n: ascii(n[:12]))
def test_tags_stored_before_the_rule_can_still_be_deleted(
    live_server: LiveServer, name: str
) -> None:
    _plant_tag(live_server.settings, name)

    with Client(live_server.url, live_server.token) as client:
        assert name in [t.name for t in client.list_tags()]
        client.delete_tag(name, "r")
        assert name not in [t.name for t in client.list_tags()]


def test_a_name_is_always_one_url_segment() -> None:
    for name in [".", "..", "a/b", "a?b#c", "%2F", "a\nb"]:
        segment = url_segment(name)
        assert "/" not in segment
        assert segment not in (".", "..")
        assert httpx.URL(f"http://h/api/tags/{segment}").path == f"/api/tags/{name}"


# --- secret values -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "words"),
    [("a\x00b", "NUL"), ("x" * (64 * 1024 + 1), "64 KiB"), ("é" * (33 * 1024), "64 KiB")],
    ids=["nul", "65-kib", "multibyte-66-kib"],
)
async def test_secret_values_are_bounded(server: Server, value: str, words: str) -> None:
    add = await server.http.post(
        "/api/secrets", json={"name": "TOKEN", "value": value}, headers=AUTH
    )
    await server.http.post("/api/secrets", json={"name": "OK", "value": "v"}, headers=AUTH)
    update = await server.http.put(
        "/api/secrets", json={"name": "OK", "value": value}, headers=AUTH
    )

    assert (add.status_code, update.status_code) == (422, 422)
    assert words in add.json()["error"]["message"]
    listed = (await server.http.get("/api/secrets", headers=AUTH)).json()
    assert [s["name"] for s in listed] == ["OK"]


async def test_a_secret_value_of_64_kib_is_accepted(server: Server) -> None:
    value = "x" * (64 * 1024)

    answer = await server.http.post(
        "/api/secrets", json={"name": "BIG", "value": value}, headers=AUTH
    )

    assert answer.status_code == 201


# --- integers ------------------------------------------------------------------------------


@pytest.mark.parametrize("seq", [2**70, 2**63, 2**31, -1])
async def test_log_seq_out_of_range_is_422(server: Server, seq: int) -> None:
    job_id, headers = await _claimed_job(server.http)

    answer = await server.http.post(f"/api/jobs/{job_id}/logs", json=_lines([seq]), headers=headers)

    assert answer.status_code == 422
    assert "seq" in answer.json()["error"]["message"]


@pytest.mark.parametrize(
    "update",
    [
        {"status": "failed", "exit_code": 2**70},
        {"status": "failed", "exit_code": -(2**63)},
        {"status": "running", "host_ports": [70000]},
        {"status": "running", "host_ports": [2**64]},
    ],
    ids=["exit-2^70", "exit--2^63", "port-70000", "port-2^64"],
)
async def test_status_numbers_out_of_range_are_422(server: Server, update: dict[str, Any]) -> None:
    job_id, headers = await _claimed_job(server.http)

    answer = await server.http.post(f"/api/jobs/{job_id}/status", json=update, headers=headers)

    assert answer.status_code == 422


@pytest.mark.parametrize("wait", [2**70, -1, 1e308])
async def test_claim_wait_out_of_range_is_422(server: Server, wait: float) -> None:
    runner_id, headers = await _runner(server.http)

    answer = await server.http.post(
        f"/api/runners/{runner_id}/claim", json={"wait_seconds": wait}, headers=headers
    )

    assert answer.status_code == 422


async def test_logs_query_numbers_out_of_range_are_422(server: Server) -> None:
    for query in ("limit=0", f"limit={2**70}", f"wait={2**70}", "wait=-1"):
        answer = await server.http.get(f"/api/runs/wise-owl-1/logs?{query}", headers=AUTH)
        assert answer.status_code == 422, query


# --- duplicate ids -------------------------------------------------------------------------


def _finished_run(name: str, job_id: str) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat()
    spec = job().spec.model_dump(mode="json")
    return {
        "run": {
            "name": name,
            "repo": {"repo_id": "github.com/acme/models", "tree": "0" * 40},
            "workflow_name": "train",
            "user": "alice",
            "submitted_at": now,
            "status": "done",
            "jobs": [
                {
                    "id": job_id,
                    "run_name": name,
                    "index": 0,
                    "workflow_name": "train",
                    "spec": spec,
                    "status": "done",
                    "submitted_at": now,
                    "finished_at": now,
                }
            ],
        },
        "artifacts": [],
    }


async def test_an_import_reusing_a_job_id_is_409(server: Server) -> None:
    first = await server.http.post(
        "/api/runs/import", json=_finished_run("old-owl-1", "a" * 32), headers=AUTH
    )
    again = await server.http.post(
        "/api/runs/import", json=_finished_run("old-owl-2", "a" * 32), headers=AUTH
    )

    assert first.status_code == 201, first.text
    assert again.status_code == 409, again.text
    assert again.json()["error"]["code"] == "conflict"
    names = [r["name"] for r in (await server.http.get("/api/runs?all=true", headers=AUTH)).json()]
    assert names == ["old-owl-1"]


async def test_an_import_reusing_a_submitted_job_id_is_409(server: Server) -> None:
    submitted = await server.http.post(
        "/api/runs", json=submission().model_dump(mode="json"), headers=AUTH
    )
    taken = submitted.json()["jobs"][0]["id"]

    answer = await server.http.post(
        "/api/runs/import", json=_finished_run("old-owl-3", taken), headers=AUTH
    )

    assert answer.status_code == 409, answer.text


@pytest.mark.parametrize(
    ("name", "job_id"),
    [("a/b", "b" * 32), ("..", "c" * 32), ("owl-1", "d" * 33), (f"owl-{2**70}", "e" * 32)],
    ids=["slash", "dots", "long-id", "huge-counter"],
)
async def test_imports_with_names_or_numbers_out_of_bounds_are_4xx(
    server: Server, name: str, job_id: str
) -> None:
    answer = await server.http.post(
        "/api/runs/import", json=_finished_run(name, job_id), headers=AUTH
    )

    assert answer.status_code == 422, answer.text


def _plant_run(settings: ServerSettings, name: str) -> None:
    """A finished run imported before names had a rule (SQLite)."""
    now = datetime.now(UTC).isoformat()
    repo = json.dumps({"repo_id": "r", "tree": "0" * 40})
    with sqlite3.connect(settings.server_dir / "db.sqlite") as db:
        db.execute(
            "INSERT INTO runs (name, name_prefix, name_counter, repo_id, repo, workflow_name,"
            " provider, args, variables, tag, user, submitted_at)"
            " VALUES (?, 'old', 1, 'r', ?, NULL, NULL, '[]', '{}', NULL, 'alice', ?)",
            (name, repo, now),
        )
        db.execute(
            'INSERT INTO jobs (id, run_name, "index", spec, deps, status, gpu_indexes,'
            " host_ports, history, version, submitted_at, finished_at)"
            " VALUES (?, ?, 0, ?, '[]', 'done', '[]', '[]', '[]', 0, ?, ?)",
            (f"{abs(hash(name)):032x}"[:32], name, job().spec.model_dump_json(), now, now),
        )


@pytest.mark.parametrize("name", ["team/run-1", "..", "run one"])
def test_runs_stored_before_the_rule_can_be_removed(live_server: LiveServer, name: str) -> None:
    _plant_run(live_server.settings, name)

    with Client(live_server.url, live_server.token) as client:
        with pytest.raises(NotFoundError, match=r"(?i)not found"):
            client.get_run("no/such-run")  # was a KeyError on the 404 of an unknown route
        assert name in [r.name for r in client.list_runs(all=True)]
        client.delete_run(name)
        assert name not in [r.name for r in client.list_runs(all=True)]


# --- every route: no request a client can make ends in a 500 --------------------------------

BAD_VALUES: list[Any] = [
    2**70,
    -(2**63),
    1e308,
    "x" * 5000,
    "\u202e\u200b\x00",
    "..",
    [],
    {},
    None,
    [2**64],
    {"\x00": 2**70},
]
BAD_SEGMENTS = ["..%2F..", "%00", "x" * 3000, "%E2%80%AE", "-1", str(2**70)]


def _routes(app: Any) -> list[tuple[str, str, list[str]]]:
    """(method, path, body field names) of every HTTP route, from the app's OpenAPI schema."""
    schema = app.openapi()
    models = schema.get("components", {}).get("schemas", {})
    found = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content", {})
            ref = content.get("application/json", {}).get("schema", {}).get("$ref", "")
            fields = list(models.get(ref.rpartition("/")[2], {}).get("properties", {}))
            found.append((method.upper(), path, fields))
    assert len(found) > 30
    return found


async def test_no_route_answers_500_to_bad_input(settings: ServerSettings) -> None:
    app = create_app(settings, blobs=MemoryBlobStore())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            runner_id, runner_headers = await _runner(http)
            failures = []
            for method, template, fields in _routes(app):
                headers = runner_headers if _for_runners(template) else AUTH
                for segment in BAD_SEGMENTS:
                    path = template.replace("{runner_id}", runner_id)
                    path = _fill(path, segment)
                    bodies: list[Any] = [None, b"{", b"[]", b'"x"']
                    bodies += [dict.fromkeys(fields, value) for value in BAD_VALUES]
                    for body in bodies:
                        answer = await _send(http, method, path, body, headers)
                        if answer.status_code >= 500:
                            failures.append((method, path[:60], repr(body)[:60], answer.text[:200]))
    assert failures == []


def _for_runners(template: str) -> bool:
    return template.startswith(("/api/jobs/", "/api/runners/{", "/api/runners/register"))


def _fill(template: str, segment: str) -> str:
    import re

    return re.sub(r"\{[a-z_]+(:[a-z]+)?\}", segment, template)


async def _send(
    http: httpx.AsyncClient, method: str, path: str, body: Any, headers: dict[str, str]
) -> httpx.Response:
    if body is None:
        return await http.request(method, path, headers=headers)
    if isinstance(body, bytes):
        return await http.request(method, path, content=body, headers={**headers, **JSON})
    return await http.request(method, path, json=body, headers=headers)


def _mutations(body: Any) -> Iterator[Any]:
    """`body` with one leaf at a time replaced by each of `BAD_VALUES`."""
    if isinstance(body, dict):
        for key, value in body.items():
            for changed in _mutations(value):
                yield {**body, key: changed}
    elif isinstance(body, list):
        for index, value in enumerate(body):
            for changed in _mutations(value):
                yield [*body[:index], changed, *body[index + 1 :]]
    else:
        yield from BAD_VALUES


async def test_no_deep_value_in_a_valid_body_makes_a_500(server: Server) -> None:
    http = server.http
    job_id, runner_headers = await _claimed_job(http)
    runner_id = runner_headers["X-Dstack-Runner-Id"]
    now = datetime.now(UTC).isoformat()
    manifest = {"path": "out", "files": [{"path": "a", "size": 1, "mode": 420, "digest": "0" * 64}]}
    cases: list[tuple[str, str, Any, dict[str, str]]] = [
        ("POST", "/api/runs", submission().model_dump(mode="json"), AUTH),
        ("POST", "/api/runs/import", _finished_run("old-owl-9", "f" * 32), AUTH),
        ("POST", "/api/runners/register", RUNNER, runner_headers),
        ("POST", f"/api/jobs/{job_id}/logs", _lines([5]), runner_headers),
        ("POST", f"/api/jobs/{job_id}/artifacts", manifest, runner_headers),
        ("POST", f"/api/runners/{runner_id}/heartbeat", {"running_jobs": [job_id]}, runner_headers),
        ("POST", "/api/users", {"name": "bob", "repos": ["r"]}, AUTH),
        ("PUT", "/api/repos/credentials", {"repo_id": "r", "url": "u", "kind": "https"}, AUTH),
        ("POST", "/api/runs/upload", {"tag": "t", "repo": REPO, "manifests": [manifest]}, AUTH),
    ]
    failures = []
    for method, path, body, headers in cases:
        for changed in _mutations(body):
            answer = await http.request(method, path, json=changed, headers=headers)
            if answer.status_code >= 500:
                failures.append((path, repr(changed)[:150], answer.text[:200]))
    queries = ["limit", "wait", "cursor", "since", "all", "repo_id", "workflow", "with_run"]
    listings = ["/api/runs", "/api/runs/x/logs", "/api/tags", "/api/caches"]
    listings += ["/api/repos/credentials"]
    for path in listings:
        for value in ["%00", "9" * 40, "-1", "\u202e", "x" * 3000, "2026-13-45"]:
            url = path + "?" + "&".join(f"{q}={value}" for q in queries)
            for method in ("GET", "DELETE"):
                answer = await http.request(method, url, headers=AUTH)
                if answer.status_code >= 500:
                    failures.append((method, url[:80], answer.text[:200]))
    assert failures == [], now


# --- the edges: configuration files and the command line -------------------------------------


@pytest.mark.parametrize("name", ["train model", "..", "tr\u0430in", "a/b"], ids=ascii)
def test_a_workflow_named_outside_the_rule_is_an_error_at_its_line(
    tmp_path: Path, name: str
) -> None:
    from tests.config.helpers import resolve

    workflows = f"workflows:\n  - name: {json.dumps(name)}\n    provider: bash\n"
    workflows += "    commands: [echo hi]\n"

    with pytest.raises(ConfigError, match=r"workflows\.yaml:2: .*invalid workflow name"):
        resolve(tmp_path, workflows, name=name)


def _cli(args: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """`dstack ARGS` as the console script runs it: (exit code, what it printed)."""
    from dstack.cli.main import main

    with pytest.raises(SystemExit) as exited:
        main(list(args))
    captured = capsys.readouterr()
    return int(exited.value.code or 0), captured.out + captured.err


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("secrets", "add", "TOKEN", "x" * (65 * 1024)), "at most 64 KiB"),
        (("secrets", "update", "TOKEN", "a\x00b"), "NUL"),
        (("secrets", "add", "MY-TOKEN", "v"), "invalid secret name 'MY-TOKEN'"),
        (("tags", "add", "..", "wise-owl-1"), "invalid tag name '..'"),
        (("users", "add", "bob smith"), "invalid user name 'bob smith'"),
    ],
    ids=["secret-65k", "secret-nul", "secret-name", "tag-dots", "user-space"],
)
def test_the_cli_refuses_bad_names_and_values_in_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: tuple[str, ...],
    words: str,
) -> None:
    monkeypatch.setenv("DSTACK_HOME", str(tmp_path / "home"))

    code, output = _cli(args, capsys)

    assert code == 1
    assert words in output
    assert "Traceback" not in output
    assert len(output.strip().splitlines()) <= 2  # the line and its hint
