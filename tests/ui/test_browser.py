"""The web UI in a real browser (Playwright driving Debian's chromium) against a real server
on a loopback port; a test plays the runner over HTTP. Each test saves screenshots under
`test-artifacts/ui/`.

Marker `browser`: without chromium or playwright these fail under CI=true, else skip.
"""

from __future__ import annotations

import gc
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from tests.ui.helpers import ADMIN, REPO_A, REPO_B, bearer, submission

from dstack.api import RunnerClient
from dstack.models.artifacts import FileEntry, Manifest
from dstack.models.digests import digest_bytes
from dstack.models.job import JobStatus
from dstack.models.logs import LogStream
from dstack.models.protocol import (
    JobStatusUpdate,
    LogBatch,
    LogLine,
    RegisterRunnerRequest,
)
from dstack.models.resources import HostResources
from dstack.server.app import create_app
from dstack.server.settings import ServerSettings
from dstack.storage.memory import MemoryBlobStore

pytestmark = [
    pytest.mark.browser,
    # uvicorn cancels the pages' open event streams when the test server stops and leaves
    # their sockets to the garbage collector
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "ui"
WAIT_MS = 15_000


def _missing(what: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is missing (scripts/test.sh installs it)")
    pytest.skip(f"{what} is missing")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright (pip install playwright)")
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        _missing("chromium (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Server:
    url: str
    blobs: MemoryBlobStore
    http: httpx.Client
    # The runner clients a test made, closed with the server: a client left to the garbage
    # collector warns about its socket in whichever later test collects it.
    runners: list[RunnerClient] = field(default_factory=list)

    def submit(self, repo_id: str = REPO_A, token: str = ADMIN, jobs: int = 1) -> str:
        body = submission(repo_id, jobs=jobs).model_dump(mode="json")
        answer = self.http.post("/api/runs", json=body, headers=bearer(token))
        assert answer.status_code == 201, answer.text
        name: str = answer.json()["name"]
        return name

    def status(self, run: str) -> str:
        answer = self.http.get(f"/api/runs/{run}", headers=bearer(ADMIN))
        value: str = answer.json()["status"]
        return value

    def runner(self) -> RunnerClient:
        request = RegisterRunnerRequest(
            name="r1",
            host="localhost",
            resources=HostResources(cpus=2, memory_mib=4096, disk_mib=10_000),
            executors=["process"],
        )
        with RunnerClient(self.url, "runner-token") as registrar:
            answer = registrar.register(request)
        assert answer.runner_token is not None
        client = RunnerClient(self.url, answer.runner_token)
        client.runner_id = answer.runner_id
        self.runners.append(client)
        return client


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    settings = ServerSettings(
        home=tmp_path / "home",
        token=ADMIN,
        user="admin",
        port=sock.getsockname()[1],
        runner_token="runner-token",
    )
    blobs = MemoryBlobStore()
    app = create_app(settings, blobs=blobs)
    uv = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert uv.started, "test server did not start"
    try:
        with httpx.Client(base_url=settings.url) as http:
            running = Server(settings.url, blobs, http)
            try:
                yield running
            finally:
                for client in running.runners:
                    client.close()
    finally:
        uv.should_exit = True
        thread.join(timeout=20)
        sock.close()
        gc.collect()  # the streams' sockets uvicorn left: collected under this test's filters


@pytest.fixture
def page(browser: Any, server: Server) -> Iterator[Any]:
    context = browser.new_context(base_url=server.url, accept_downloads=True)
    context.set_default_timeout(WAIT_MS)
    opened = context.new_page()
    try:
        yield opened
    finally:
        context.close()


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def sign_in(page: Any, token: str = ADMIN) -> None:
    page.goto("/")
    assert "/signin" in page.url  # no page without a session
    page.get_by_label("Your token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/")
    page.get_by_role("heading", name="Runs").wait_for()


def report(runner: RunnerClient, job_id: str, status: JobStatus, **kwargs: Any) -> None:
    runner.post_status(job_id, JobStatusUpdate(status=status, **kwargs))


def test_a_run_appears_and_finishes_live(page: Any, server: Server) -> None:
    sign_in(page)
    shot(page, "signed-in-empty")
    name = server.submit()
    row = page.locator(f'tr[data-run="{name}"]')
    row.wait_for()  # no reload: the page's stream said something changed
    runner = server.runner()
    assignment = runner.claim(wait_seconds=10)
    assert assignment is not None
    report(runner, assignment.job_id, JobStatus.RUNNING)
    row.locator(".status.s-running").wait_for()
    report(runner, assignment.job_id, JobStatus.DONE, exit_code=0)
    row.locator(".status.s-done").wait_for()
    shot(page, "runs")


def test_logs_stream_while_the_job_prints(page: Any, server: Server) -> None:
    name = server.submit()
    runner = server.runner()
    assignment = runner.claim(wait_seconds=10)
    assert assignment is not None
    job = assignment.job_id
    report(runner, job, JobStatus.RUNNING)
    now = time.time()

    def lines(first: int, count: int, seq: int) -> None:
        text = "".join(f"line {i} \x1b[32mok\x1b[0m\n" for i in range(first, first + count))
        stamp = datetime.fromtimestamp(now, tz=UTC)
        line = LogLine(seq=seq, timestamp=stamp, stream=LogStream.STDOUT, data=text)
        runner.post_logs(job, LogBatch(lines=[line]))

    lines(0, 5000, 0)
    sign_in(page)
    page.goto(f"/runs/{name}")
    page.get_by_role("link", name="train0 #0").first.click()
    log = page.get_by_role("log", name="Output")
    log.get_by_text("line 4999 ok").wait_for()  # opened at the tail
    rows_in_dom = log.locator(".log-row").count()
    assert 0 < rows_in_dom < 200  # virtualized: 5000 lines, only the visible ones exist
    lines(5000, 3, 1)  # printed while the page is open
    log.get_by_text("line 5002 ok").wait_for()
    assert log.locator(".fg-2").first.inner_text() == "ok"  # ANSI green, as a class
    page.get_by_label("Search").fill("line 1234 ")
    page.get_by_role("button", name="Find").click()
    page.locator("#log-matches").get_by_text("1 / 1").wait_for()
    log.locator(".log-row.hit").get_by_text("line 1234 ok").wait_for()
    shot(page, "logs")
    report(runner, job, JobStatus.DONE, exit_code=0)
    page.locator("#job-status .s-done").wait_for()


def test_stop_a_run_from_its_page(page: Any, server: Server) -> None:
    name = server.submit(jobs=3)  # each job needs all before it: three edges
    sign_in(page)
    page.goto(f"/runs/{name}")
    assert page.locator("svg.graph line.edge").count() == 3
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Stop").click()
    page.locator("#run-status .s-stopped").wait_for()
    assert server.status(name) == "stopped"
    shot(page, "run")


def test_download_an_artifact(page: Any, server: Server) -> None:
    name = server.submit()
    runner = server.runner()
    assignment = runner.claim(wait_seconds=10)
    assert assignment is not None
    data = os.urandom(300_000)
    digest = digest_bytes(data)
    server.blobs.put_bytes(data, digest)
    entry = FileEntry(path="weights.bin", size=len(data), mode=0o644, digest=digest)
    runner.post_artifacts(assignment.job_id, Manifest(path="model", files=[entry]))
    report(runner, assignment.job_id, JobStatus.DONE, exit_code=0)
    sign_in(page)
    page.goto(f"/runs/{name}/artifacts?path=model")
    with page.expect_download() as download:
        page.get_by_role("row", name="weights.bin").get_by_role("link", name="download").click()
    saved = download.value.path()
    assert Path(saved).read_bytes() == data
    shot(page, "artifacts")


def test_a_user_without_access_sees_nothing_and_csrf_is_refused(page: Any, server: Server) -> None:
    answer = server.http.post(
        "/api/users", json={"name": "dora", "repos": [REPO_A]}, headers=bearer(ADMIN)
    )
    token = answer.json()["token"]
    hidden = server.submit(REPO_B)
    visible = server.submit(REPO_A)
    sign_in(page, token)
    page.locator(f'tr[data-run="{visible}"]').wait_for()
    assert page.locator(f'tr[data-run="{hidden}"]').count() == 0
    assert REPO_B not in page.content()
    for path in (f"/runs/{hidden}", f"/runs/{hidden}/jobs/0", f"/runs/{hidden}/artifacts"):
        response = page.goto(path)
        assert response is not None
        assert response.status == 404, path
    page.goto(f"/runs/{visible}")
    # the page's own cookie, but no CSRF token: refused, nothing stopped
    status = page.evaluate(
        f"fetch('/runs/{visible}/stop', {{method: 'POST', credentials: 'same-origin'}})"
        ".then(r => r.status)"
    )
    assert status == 403
    assert server.status(visible) in ("submitted", "pending")  # not stopped


def finish_next_job(runner: RunnerClient) -> None:
    assignment = runner.claim(wait_seconds=10)
    assert assignment is not None
    report(runner, assignment.job_id, JobStatus.RUNNING)
    report(runner, assignment.job_id, JobStatus.DONE, exit_code=0)


def test_rerun_from_the_run_page(page: Any, server: Server) -> None:
    name = server.submit()
    runner = server.runner()
    finish_next_job(runner)
    sign_in(page)
    page.goto(f"/runs/{name}")
    page.locator("#run-status .s-done").wait_for()
    page.get_by_role("button", name="Re-run", exact=True).click()
    page.wait_for_url(lambda url: "/runs/" in url and not url.endswith(f"/runs/{name}"))
    new = page.url.rsplit("/", 1)[-1]
    assert new != name
    page.get_by_role("link", name=name).wait_for()  # "Re-run of"
    finish_next_job(runner)  # the same job again (nothing to reuse: it declares no artifacts)
    page.locator("#run-status .s-done").wait_for()  # live, no reload
    assert server.status(new) == "done"
    cache = page.get_by_role("list", name="Cache")  # why the job ran, decided at submit
    assert "ran: not cacheable: no artifacts" in " ".join(cache.inner_text().split())
    shot(page, "rerun")


def test_log_stream_filter_and_timestamps(page: Any, server: Server) -> None:
    name = server.submit()
    runner = server.runner()
    assignment = runner.claim(wait_seconds=10)
    assert assignment is not None
    stamp = datetime(2024, 5, 1, 12, 30, 5, tzinfo=UTC)
    printed = [
        LogLine(seq=i, timestamp=stamp, stream=stream, data=f"{stream} {i}\n")
        for i, stream in enumerate([LogStream.STDOUT, LogStream.STDERR] * 3)
    ]
    runner.post_logs(assignment.job_id, LogBatch(lines=printed))
    report(runner, assignment.job_id, JobStatus.DONE, exit_code=0)
    sign_in(page)
    page.goto(f"/runs/{name}/jobs/0")
    log = page.get_by_role("log", name="Output")
    log.get_by_text("stderr 5").wait_for()
    assert log.locator(".log-row").count() == 6
    page.get_by_label("Streams").select_option("stderr")
    log.get_by_text("stdout 0").wait_for(state="detached")
    log.get_by_text("stderr 5").wait_for()  # the rows are drawn again after the filter
    assert log.locator(".log-row").all_inner_texts() == ["1stderr 1", "2stderr 3", "3stderr 5"]
    assert "stream=stderr" in page.url
    page.get_by_label("Timestamps").check()
    page.get_by_label("Time zone").select_option("utc")
    log.locator("time.ts").first.get_by_text("2024-05-01 12:30:05 UTC").wait_for()
    page.reload()  # the filter and the toggle come back from the URL, the time zone from storage
    log.get_by_text("stderr 5").wait_for()
    assert log.locator(".log-row").count() == 3
    assert log.locator("time.ts").first.inner_text() == "2024-05-01 12:30:05 UTC"
    shot(page, "logs-stderr")
