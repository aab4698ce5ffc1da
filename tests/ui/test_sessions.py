"""The web UI over HTTP: sessions, CSRF, repository scope, keyset pages, logs, artifacts."""

from __future__ import annotations

import asyncio
import io
import zipfile

import httpx
import pytest
from sqlalchemy import event
from tests.ui.helpers import (
    ADMIN,
    REPO_A,
    REPO_B,
    add_artifact,
    add_logs,
    bearer,
    csrf_of,
    job_id,
    new_user,
    submit,
)

from dstack.server.context import ServerContext
from dstack.server.principals import Principal, Role
from dstack.ui import runs as run_pages
from dstack.ui.ansi import to_html
from dstack.ui.sessions import UiSession

pytestmark = pytest.mark.anyio


async def sign_in(http: httpx.AsyncClient, token: str) -> httpx.Response:
    response = await http.post("/signin", data={"token": token, "next": "/"})
    assert response.status_code == 303, response.text
    return response


async def test_no_page_or_data_without_a_session(http: httpx.AsyncClient) -> None:
    page = await http.get("/runs/x-1")
    assert page.status_code == 303
    assert page.headers["location"] == "/signin?next=%2Fruns%2Fx-1"
    for path in ("/ui/fragments/runs", "/ui/api/runs/x-1/jobs/0/lines", "/ui/events"):
        assert (await http.get(path)).status_code == 401, path
    # a bearer token is no session: the UI takes cookies only
    assert (await http.get("/ui/fragments/runs", headers=bearer(ADMIN))).status_code == 401
    refused = await http.post("/runs/x-1/stop")  # a form post: sent to sign in, nothing done
    assert (refused.status_code, refused.headers["location"]) == (
        303,
        "/signin?next=%2Fruns%2Fx-1%2Fstop",
    )
    assert (await http.get("/signin")).status_code == 200


async def test_sign_in_cookie_and_sign_out(http: httpx.AsyncClient) -> None:
    wrong = await http.post("/signin", data={"token": "nope"})
    assert wrong.status_code == 401
    assert "dstack_session" not in wrong.cookies
    response = await sign_in(http, ADMIN)
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=lax" in cookie
    assert "secure" not in cookie  # plain HTTP here; HTTPS sets it
    assert ADMIN not in response.headers["set-cookie"]  # an opaque id, not the token
    page = await http.get("/")
    assert page.status_code == 200
    csrf = csrf_of(page.text)
    old = dict(http.cookies)
    out = await http.post("/signout", data={"csrf": csrf})
    assert out.status_code == 303
    # the old cookie is dead on the server, not only deleted in this browser
    http.cookies.clear()
    http.cookies.update(old)
    stale = await http.get("/ui/fragments/runs")
    assert stale.status_code == 401


async def test_https_sets_secure_cookie(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/signin", data={"token": ADMIN}, headers={"x-forwarded-proto": "https"}
    )
    assert "secure" in response.headers["set-cookie"].lower()


async def test_a_new_token_or_a_deleted_user_ends_the_session(http: httpx.AsyncClient) -> None:
    token = await new_user(http, "bob")
    await sign_in(http, token)
    assert (await http.get("/ui/fragments/runs")).status_code == 200
    deleted = await http.delete("/api/users/bob", headers=bearer(ADMIN))
    assert deleted.status_code == 204
    assert (await http.get("/ui/fragments/runs")).status_code == 401


async def test_runner_tokens_sign_nobody_in(http: httpx.AsyncClient) -> None:
    response = await http.post("/api/runners/tokens", headers=bearer(ADMIN))
    runner_token = response.json()["token"]
    assert (await http.post("/signin", data={"token": runner_token})).status_code == 401


async def test_csrf_and_origin_are_checked(http: httpx.AsyncClient, ctx: ServerContext) -> None:
    name = await submit(http, ADMIN, REPO_A)
    await sign_in(http, ADMIN)
    csrf = csrf_of((await http.get(f"/runs/{name}")).text)
    assert (await http.post(f"/runs/{name}/stop")).status_code == 403
    assert (await http.post(f"/runs/{name}/stop", data={"csrf": "forged"})).status_code == 403
    evil = {"origin": "https://evil.example"}
    assert (
        await http.post(f"/runs/{name}/stop", data={"csrf": csrf}, headers=evil)
    ).status_code == 403
    cross = {"sec-fetch-site": "cross-site"}
    assert (
        await http.post(f"/runs/{name}/stop", data={"csrf": csrf}, headers=cross)
    ).status_code == 403
    from dstack.server.services import runs as run_service

    assert (await run_service.get_run(ctx, name=name)).status.value == "submitted"
    same = {"origin": "http://test", "sec-fetch-site": "same-origin"}
    ok = await http.post(f"/runs/{name}/stop", data={"csrf": csrf}, headers=same)
    assert ok.status_code == 303
    assert (await run_service.get_run(ctx, name=name)).status.value == "stopped"


async def test_a_user_sees_only_the_runs_of_their_repositories(
    http: httpx.AsyncClient, ctx: ServerContext
) -> None:
    mine = await submit(http, ADMIN, REPO_A)
    other = await submit(http, ADMIN, REPO_B)
    await add_logs(ctx, await job_id(ctx, other), [("stdout", "secret output\n")])
    token = await new_user(http, "carol", repos=[REPO_A])
    await sign_in(http, token)
    page = await http.get("/")
    assert mine in page.text
    assert other not in page.text
    assert REPO_B not in (await http.get("/ui/fragments/runs", params={"repo": REPO_B})).text
    for path in (
        f"/runs/{other}",
        f"/runs/{other}/jobs/0",
        f"/runs/{other}/artifacts",
        f"/runs/{other}/jobs/0/log.txt",
        f"/ui/api/runs/{other}/jobs/0/lines",
        f"/ui/api/runs/{other}/jobs/0/search?q=secret",
        f"/ui/fragments/runs/{other}",
    ):
        response = await http.get(path)
        assert response.status_code == 404, path
        assert "secret output" not in response.text
    csrf = csrf_of(page.text)
    assert (await http.post(f"/runs/{other}/stop", data={"csrf": csrf})).status_code == 404
    assert (await http.get("/users")).status_code == 403  # admins only
    assert (await http.get(f"/runs/{mine}")).status_code == 200


async def test_dstack_ui_code_is_single_use(http: httpx.AsyncClient) -> None:
    assert (await http.post("/api/ui/codes")).status_code == 401
    response = await http.post("/api/ui/codes", headers=bearer(ADMIN))
    assert response.status_code == 201
    path = response.json()["path"]
    first = await http.get(path)
    assert first.status_code == 303
    assert "dstack_session" in first.cookies
    http.cookies.clear()
    assert (await http.get(path)).status_code == 401


async def test_pages_follow_the_run_keys(http: httpx.AsyncClient, ctx: ServerContext) -> None:
    names = [await submit(http, ADMIN, REPO_A if i % 2 else REPO_B) for i in range(7)]
    await sign_in(http, ADMIN)
    run_pages_size = run_pages.PAGE_SIZE
    run_pages.PAGE_SIZE = 3
    try:
        seen: list[str] = []
        cursor: str | None = None
        while True:
            params = {"cursor": cursor} if cursor else {}
            page = await http.get("/", params=params)
            assert page.status_code == 200
            rows = [n for n in names if f'data-run="{n}"' in page.text]
            seen += sorted(rows, key=names.index, reverse=True)
            found = list(page.text.split('rel="next" href="')[1:2])
            if not found:
                break
            cursor = found[0].split("cursor=")[1].split('"')[0]
    finally:
        run_pages.PAGE_SIZE = run_pages_size
    assert seen == list(reversed(names))  # newest first, each once


async def test_the_runs_query_walks_an_index(http: httpx.AsyncClient, ctx: ServerContext) -> None:
    """Keyset, not OFFSET: the statement of the second page reads `ix_runs_submitted_name`
    from the cursor's key on, without sorting the table (SQLite's plan of the very statement
    the page ran)."""
    for _ in range(3):
        await submit(http, ADMIN, REPO_A)
    ui = UiSession(principal=Principal(name="admin", role=Role.ADMIN), csrf="c", id_hash="h")
    first, _ = await run_pages.page(ctx, ui, run_pages.Filters(), None)
    cursor = run_pages.encode_cursor(first[0])
    seen: list[tuple[str, object]] = []

    def record(_conn, _cursor, statement, parameters, _context, _many) -> None:
        if statement.lstrip().upper().startswith("SELECT RUNS."):
            seen.append((statement, parameters))

    engine = ctx.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        page, _ = await run_pages.page(ctx, ui, run_pages.Filters(), cursor)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert [r.name for r in page] == [r.name for r in first[1:]]
    statement, parameters = seen[0]
    # SQLite's dialect always writes `LIMIT ? OFFSET ?`: nothing is skipped
    assert "OFFSET" not in statement.upper() or list(parameters)[-1] == 0  # type: ignore[call-overload]
    async with ctx.connect() as connection:
        plan = await _explain(connection, statement, parameters)
    details = " ".join(plan)
    assert "ix_runs_submitted_name" in details, details
    assert "TEMP B-TREE" not in details, details


async def _explain(connection, statement: str, parameters: object) -> list[str]:
    result = await connection.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
    return [str(row[-1]) for row in result.all()]


async def test_log_lines_search_and_download(http: httpx.AsyncClient, ctx: ServerContext) -> None:
    name = await submit(http, ADMIN, REPO_A)
    chunks = [
        ("stdout", "line 0\nline 1\npart"),
        ("stdout", "ial 2\n"),
        ("stderr", "\x1b[31merror <b>3</b>\x1b[0m\x1b[2K\n"),
        ("stdout", "".join(f"row {i}\n" for i in range(4, 1000))),
    ]
    await add_logs(ctx, await job_id(ctx, name), chunks)
    await sign_in(http, ADMIN)
    base = f"/ui/api/runs/{name}/jobs/0"
    first = (await http.get(f"{base}/lines", params={"start": 0, "count": 5})).json()
    assert first["total"] == 1000
    texts = [line["h"] for line in first["lines"]]
    assert texts[:3] == ["line 0", "line 1", "partial 2"]
    assert texts[3] == '<span class="fg-1">error &lt;b&gt;3&lt;/b&gt;</span>'
    assert first["lines"][3]["s"] == "stderr"
    middle = (await http.get(f"{base}/lines", params={"start": 500, "count": 2})).json()
    assert [line["h"] for line in middle["lines"]] == ["row 500", "row 501"]
    assert [line["n"] for line in middle["lines"]] == [500, 501]
    found = (await http.get(f"{base}/search", params={"q": "ROW 99"})).json()
    assert found["matches"] == [99, *range(990, 1000)]
    raw = await http.get(f"/runs/{name}/jobs/0/log.txt")
    assert raw.headers["content-disposition"].startswith("attachment")
    assert raw.text == "".join(t for _, t in chunks)


async def test_artifacts_file_and_streamed_zip(http: httpx.AsyncClient, ctx: ServerContext) -> None:
    name = await submit(http, ADMIN, REPO_A)
    files = {"a.txt": b"alpha\n", "sub/b.bin": bytes(range(256)) * 100}
    await add_artifact(ctx, await job_id(ctx, name), "out", files)
    await sign_in(http, ADMIN)
    listing = await http.get(f"/runs/{name}/artifacts", params={"path": "out"})
    assert "a.txt" in listing.text
    assert "sub/" in listing.text
    one = await http.get(f"/runs/{name}/artifacts/file", params={"path": "out/sub/b.bin"})
    assert one.content == files["sub/b.bin"]
    assert one.headers["content-disposition"].startswith("attachment")
    archive = await http.get(f"/runs/{name}/artifacts/zip", params={"path": "out"})
    with zipfile.ZipFile(io.BytesIO(archive.content)) as opened:
        assert {n: opened.read(n) for n in opened.namelist()} == files
    preview = await http.get(f"/runs/{name}/artifacts/preview", params={"path": "out/a.txt"})
    assert "alpha" in preview.text
    missing = await http.get(f"/runs/{name}/artifacts/file", params={"path": "out/none"})
    assert missing.status_code == 404


def test_ansi_is_escaped_and_other_controls_dropped() -> None:
    assert to_html("<x>\x1b[1;32mok\x1b[0m\x07\x1b]0;title\x07!") == (
        '&lt;x&gt;<span class="b fg-2">ok</span>!'
    )


def events_of(body: str) -> list[tuple[str | None, str, str]]:
    """(id, event, data) of a text/event-stream body."""
    found = []
    for block in body.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            found.append((fields.get("id"), fields["event"], fields["data"]))
    return found


async def test_the_log_stream_resumes_after_the_last_event_id(
    http: httpx.AsyncClient, ctx: ServerContext
) -> None:
    name = await submit(http, ADMIN, REPO_A)
    chunks = [("stdout", "a\n"), ("stderr", "b\n"), ("stdout", "c\n")]
    await add_logs(ctx, await job_id(ctx, name), chunks)
    from dstack.server.services import runs as run_service

    await run_service.stop_run(ctx, name=name)  # finished: the stream ends by itself
    await sign_in(http, ADMIN)
    url = f"/ui/api/runs/{name}/jobs/0/stream"
    fresh = events_of((await http.get(url)).text)
    assert fresh[0] == ("2", "lines", '{"total": 3, "runner": false}')
    assert [e[1] for e in fresh] == ["lines", "status", "end"]
    stdout_only = events_of((await http.get(url, params={"streams": "stdout"})).text)
    assert stdout_only[0] == ("2", "lines", '{"total": 2, "runner": false}')
    resumed = events_of((await http.get(url, headers={"Last-Event-ID": "2"})).text)
    assert [e[1] for e in resumed] == ["status", "end"]  # nothing after seq 2 to announce
    earlier = events_of((await http.get(url, headers={"Last-Event-ID": "0"})).text)
    assert earlier[0][:2] == ("2", "lines")


async def test_open_streams_end_when_the_server_drains(
    http: httpx.AsyncClient, ctx: ServerContext
) -> None:
    # An exiting server ends its event streams (the browser reconnects to the next one)
    # instead of holding the graceful shutdown for as long as a tab stays open.
    name = await submit(http, ADMIN, REPO_A)  # its job never finishes here
    await add_logs(ctx, await job_id(ctx, name), [("stdout", "a\n")])
    await sign_in(http, ADMIN)
    log = asyncio.create_task(http.get(f"/ui/api/runs/{name}/jobs/0/stream"))
    changes = asyncio.create_task(http.get("/ui/events"))
    await asyncio.sleep(0.3)
    assert not log.done()
    assert not changes.done()

    ctx.drain()

    log_events = events_of((await asyncio.wait_for(log, timeout=10)).text)
    kinds = [e[1] for e in log_events]
    assert kinds[:2] == ["lines", "status"], kinds
    assert "end" not in kinds  # the job goes on: the stream resumes on the next server
    assert (await asyncio.wait_for(changes, timeout=10)).status_code == 200


async def test_rerun_from_the_page_needs_csrf_and_the_repository(
    http: httpx.AsyncClient, ctx: ServerContext
) -> None:
    mine = await submit(http, ADMIN, REPO_A)
    other = await submit(http, ADMIN, REPO_B)
    token = await new_user(http, "dave", repos=[REPO_A])
    await sign_in(http, token)
    page = await http.get(f"/runs/{mine}")
    assert 'action="/runs/' + mine + '/rerun"' in page.text
    csrf = csrf_of(page.text)
    assert (await http.post(f"/runs/{mine}/rerun")).status_code == 403
    assert (await http.post(f"/runs/{mine}/rerun", data={"csrf": "forged"})).status_code == 403
    evil = {"origin": "https://evil.example"}
    refused = await http.post(f"/runs/{mine}/rerun", data={"csrf": csrf}, headers=evil)
    assert refused.status_code == 403
    hidden = await http.post(f"/runs/{other}/rerun", data={"csrf": csrf})
    assert hidden.status_code == 404
    from dstack.server.services import runs as run_service

    assert len(await run_service.list_runs(ctx, all=True)) == 2  # nothing submitted yet
    done = await http.post(f"/runs/{mine}/rerun", data={"csrf": csrf})
    assert done.status_code == 303
    new = done.headers["location"].removeprefix("/runs/")
    rerun = await run_service.get_run(ctx, name=new)
    assert (rerun.user, rerun.repo.repo_id) == ("dave", REPO_A)
    assert f'href="/runs/{mine}"' in (await http.get(f"/runs/{new}")).text  # "Re-run of"


async def test_the_run_page_says_why_each_job_ran(http: httpx.AsyncClient) -> None:
    name = await submit(http, ADMIN, REPO_A, jobs=2)
    await sign_in(http, ADMIN)

    page = (await http.get(f"/runs/{name}")).text

    cache = page[page.index('<h2 id="cache">') :]
    assert "<strong>train0 #0</strong> ran:" in cache
    assert "<strong>train1 #1</strong> ran:" in cache
    assert cache.count("<li>not cacheable: no artifacts</li>") == 2


async def test_stop_selected_runs(http: httpx.AsyncClient, ctx: ServerContext) -> None:
    from dstack.server.services import runs as run_service

    first, second = await submit(http, ADMIN, REPO_A), await submit(http, ADMIN, REPO_A)
    other = await submit(http, ADMIN, REPO_B)
    token = await new_user(http, "erin", repos=[REPO_A])
    await sign_in(http, token)
    page = await http.get("/")
    assert f'name="run" value="{first}"' in page.text
    csrf = csrf_of(page.text)
    picked = {"back": "/?repo=x", "run": [first, other]}
    assert (await http.post("/runs/stop", data=picked)).status_code == 403  # no CSRF
    picked["csrf"] = csrf
    assert (await http.post("/runs/stop", data=picked)).status_code == 404  # one not hers
    assert (await run_service.get_run(ctx, name=first)).status.value == "submitted"
    both = {"csrf": csrf, "back": "/?repo=x", "run": [first, second]}
    stopped = await http.post("/runs/stop", data=both)
    assert (stopped.status_code, stopped.headers["location"]) == (303, "/?repo=x")
    for name in (first, second):
        assert (await run_service.get_run(ctx, name=name)).status.value == "stopped"
    assert (await run_service.get_run(ctx, name=other)).status.value == "submitted"


async def test_log_lines_of_chosen_streams(http: httpx.AsyncClient, ctx: ServerContext) -> None:
    name = await submit(http, ADMIN, REPO_A)
    chunks = [("stdout", "a"), ("stderr", "err 1\n"), ("stdout", "b\n"), ("stdout", "c\n")]
    await add_logs(ctx, await job_id(ctx, name), chunks)
    await sign_in(http, ADMIN)
    base = f"/ui/api/runs/{name}/jobs/0"

    async def lines(streams: str | None) -> list[tuple[str, str]]:
        params = {"streams": streams} if streams else {}
        body = (await http.get(f"{base}/lines", params=params)).json()
        assert body["total"] == len(body["lines"])
        assert all(line["t"] for line in body["lines"])  # when each was printed
        return [(line["s"], line["h"]) for line in body["lines"]]

    # all streams: as printed (a partial stdout line is continued by the next row)
    assert await lines(None) == [("stdout", "aerr 1"), ("stdout", "b"), ("stdout", "c")]
    assert await lines("stdout") == [("stdout", "ab"), ("stdout", "c")]
    assert await lines("stderr") == [("stderr", "err 1")]
    found = (await http.get(f"{base}/search", params={"q": "c", "streams": "stdout"})).json()
    assert found["matches"] == [1]
    bad = await http.get(f"{base}/lines", params={"streams": "stdout,secrets"})
    assert bad.status_code == 400
    page = await http.get(f"/runs/{name}/jobs/0", params={"stream": "stderr", "ts": "1"})
    assert '<option value="stderr" selected>' in page.text
    assert 'id="log-time" checked' in page.text
    assert 'id="log-runner-toggle" hidden' in page.text  # no runner messages in this log


async def test_the_runners_own_messages_are_a_stream_of_their_own(
    http: httpx.AsyncClient, ctx: ServerContext
) -> None:
    from datetime import timedelta

    from dstack.server.db.models import LogRow

    name = await submit(http, ADMIN, REPO_A)
    job = await job_id(ctx, name)
    chunks = [("runner", "pulling image\n"), ("stdout", "hello\n"), ("runner", "exit 0\n")]
    now = ctx.clock()
    async with ctx.transaction() as session:  # as the runner will send them (stream `runner`)
        session.add_all(
            LogRow(job_id=job, seq=i, timestamp=now + timedelta(seconds=i), stream=s, data=d)
            for i, (s, d) in enumerate(chunks)
        )
    await sign_in(http, ADMIN)
    base = f"/ui/api/runs/{name}/jobs/0"
    shown = (await http.get(f"{base}/lines", params={"streams": "stdout,stderr"})).json()
    assert [line["h"] for line in shown["lines"]] == ["hello"]
    with_runner = (await http.get(f"{base}/lines", params={"streams": "stdout,runner"})).json()
    assert [line["s"] for line in with_runner["lines"]] == ["runner", "stdout", "runner"]
    page = await http.get(f"/runs/{name}/jobs/0")
    assert 'id="log-runner-toggle">' in page.text  # the toggle shows: the log has them
