"""The UI's routes: pages at `/`, their data under `/ui/`, one API endpoint for `dstack ui`.

Each handler reads with the server's services, as the API routers do, judging the session's
principal exactly as the API judges its token: runs of repositories the user may not see
are 404, admin pages 403 to others.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import iterate_in_threadpool
from starlette.responses import StreamingResponse

from dstack.errors import NotFoundError
from dstack.models.job import Job
from dstack.models.run import Run
from dstack.server.auth import CurrentUser
from dstack.server.context import Notifier, ServerContext
from dstack.server.errors import Forbidden, InvalidRequestError
from dstack.server.services import reruns as rerun_service
from dstack.server.services import runners as runner_service
from dstack.server.services import runs as run_service
from dstack.server.services import secrets as secret_service
from dstack.server.services import tags as tag_service
from dstack.server.services import users as user_service
from dstack.server.services.scope import is_admin, require_secret_scope
from dstack.ui import artifacts as art
from dstack.ui import loglines, sessions
from dstack.ui import runs as run_pages
from dstack.ui.auth import (
    COOKIE,
    changing,
    check_origin,
    ctx_of,
    data_session,
    page_session,
    read_form,
    read_form_lists,
    session_of,
    set_cookie,
)
from dstack.ui.html import esc, layout, money, post_button, seg, size, status, url, when
from dstack.ui.sessions import UiSession

router = APIRouter(include_in_schema=False)
api_router = APIRouter(prefix="/api/ui")
Page = Annotated[UiSession, Depends(page_session)]
Data = Annotated[UiSession, Depends(data_session)]
_STATIC = {
    "app.css": "text/css",
    "app.js": "text/javascript",
    "logs.js": "text/javascript",
    "theme.js": "text/javascript",
}
PING_SECONDS = 15.0
MAX_STOPPED = 200  # runs one "Stop selected" may name
_NO_STORE = {"Cache-Control": "no-store"}


def _html(text: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status_code=status_code, headers=_NO_STORE)


def _see_other(target: str) -> RedirectResponse:
    return RedirectResponse(target, status_code=303)


def _safe_next(target: str | None) -> str:
    """Only a path of this site (never `//host` or a scheme) to go back to after sign-in."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


# --- static files ---------------------------------------------------------------------------
@router.get("/ui/static/{name}")
async def static(name: str) -> Response:
    if name not in _STATIC:
        raise NotFoundError(f"no file '{name}'")
    data = resources.files("dstack.ui").joinpath("static", name).read_bytes()
    return Response(data, media_type=_STATIC[name], headers={"Cache-Control": "max-age=300"})


# --- sign-in --------------------------------------------------------------------------------
def _signin_page(next_path: str, error: str | None = None) -> str:
    alert = f'<p class="error" role="alert">{esc(error)}</p>' if error else ""
    body = f"""<h1>Sign in</h1>{alert}
<form method="post" action="/signin" class="signin">
<input type="hidden" name="next" value="{esc(next_path)}">
<label for="token">Your token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required
 maxlength="500" autofocus>
<p class="hint">The token of your user (<code>dstack users</code>; the local server's admin
token is in <code>~/.dstack/server/admin_token</code>). Or run <code>dstack ui</code>.</p>
<button type="submit">Sign in</button></form>"""
    return layout("Sign in", body, ui=None)


@router.get("/signin")
async def signin_form(request: Request, next: str | None = None) -> Response:
    if await session_of(request) is not None:
        return _see_other(_safe_next(next))
    return _html(_signin_page(_safe_next(next)))


@router.post("/signin")
async def signin(request: Request) -> Response:
    check_origin(request)
    form = await read_form(request)
    target = _safe_next(form.get("next"))
    session_id = await sessions.sign_in(ctx_of(request), form.get("token", "")[:500])
    if session_id is None:
        return _html(_signin_page(target, "That token is not a user's token."), 401)
    response = _see_other(target)
    set_cookie(response, request, session_id)
    return response


@router.get("/signin/code")
async def signin_with_code(request: Request, code: str = "") -> Response:
    """The link `dstack ui` opens: a one-time code, exchanged for a session."""
    session_id = await sessions.redeem_code(ctx_of(request), code[:200])
    if session_id is None:
        return _html(_signin_page("/", "That sign-in link was used or has expired."), 401)
    response = _see_other("/")
    set_cookie(response, request, session_id)
    return response


@router.post("/signout")
async def signout(request: Request) -> Response:
    ui, _ = await changing(request)
    await sessions.sign_out(ctx_of(request), ui.id_hash)
    response = _see_other("/signin")
    response.delete_cookie(COOKIE, path="/")
    return response


@api_router.post("/codes", status_code=201)
async def create_code(request: Request, user: CurrentUser) -> dict[str, str]:
    """`dstack ui`: a one-time sign-in code (60 s) for the user the token belongs to."""
    try:
        code = await sessions.create_code(ctx_of(request), user)
    except LookupError:
        raise Forbidden("this token belongs to no user") from None
    return {"code": code, "path": url("/signin/code", code=code)}


# --- runs -----------------------------------------------------------------------------------
@router.get("/")
async def runs_page(request: Request, ui: Page, cursor: str | None = None) -> Response:
    ctx = ctx_of(request)
    filters = run_pages.Filters.of(dict(request.query_params))
    runs, nxt = await run_pages.page(ctx, ui, filters, cursor)
    body = run_pages.list_body(runs, filters, cursor, nxt, ctx.clock(), ui)
    return _html(layout("Runs", body, ui=ui, nav="runs"))


@router.get("/ui/fragments/runs")
async def runs_fragment(request: Request, ui: Data, cursor: str | None = None) -> Response:
    ctx = ctx_of(request)
    filters = run_pages.Filters.of(dict(request.query_params))
    runs, _ = await run_pages.page(ctx, ui, filters, cursor)
    return _html(run_pages.rows(runs, ctx.clock()))


async def _visible_run(ctx: ServerContext, ui: UiSession, name: str) -> Run:
    await user_service.require_visible_run(ctx, ui.principal, name)
    return await run_service.get_run(ctx, name=name)


async def _detail(ctx: ServerContext, ui: UiSession, run: Run) -> str:
    rerun = await rerun_service.info(ctx, run.name)
    return run_pages.run_detail(run, ui, ctx.clock(), local=ctx.settings.local_runner, rerun=rerun)


@router.get("/runs/{name}")
async def run_page(request: Request, name: str, ui: Page) -> Response:
    ctx = ctx_of(request)
    run = await _visible_run(ctx, ui, name)
    detail = await _detail(ctx, ui, run)
    body = (
        f'<p class="crumbs"><a href="/">Runs</a> /</p><h1>{esc(run.name)}</h1>'
        f'<p class="live" aria-live="polite"><span id="updated" data-live="run">live</span></p>'
        f'<div id="run-detail" data-fragment="/ui/fragments/runs/{esc(seg(run.name))}">'
        f"{detail}</div>"
    )
    return _html(layout(f"Run {run.name}", body, ui=ui, nav="runs"))


@router.get("/ui/fragments/runs/{name}")
async def run_fragment(request: Request, name: str, ui: Data) -> Response:
    ctx = ctx_of(request)
    run = await _visible_run(ctx, ui, name)
    return _html(await _detail(ctx, ui, run))


@router.post("/runs/stop")
async def stop_runs(request: Request) -> Response:
    """The runs list's "Stop selected": every run named (`run`, repeated) is stopped, or
    none when one of them is not the user's to see (404)."""
    ui, form = await changing(request)
    ctx = ctx_of(request)
    names = list(dict.fromkeys((await read_form_lists(request)).get("run", [])))
    if not names:
        raise InvalidRequestError("no run selected", hint="tick the runs to stop")
    if len(names) > MAX_STOPPED:
        raise InvalidRequestError(f"at most {MAX_STOPPED} runs at once")
    for name in names:
        await _visible_run(ctx, ui, name)
    for name in names:
        await run_service.stop_run(ctx, name=name, abort=form.get("abort") == "1")
    return _see_other(_safe_next(form.get("back")))


@router.post("/runs/{name}/rerun")
async def rerun_run(request: Request, name: str) -> Response:
    """Re-run (`services/reruns.py`): the same submission, by the session's user, who must
    be allowed to submit in the run's repository; the new run's page next."""
    ui, form = await changing(request)
    ctx = ctx_of(request)
    run = await _visible_run(ctx, ui, name)
    user_service.require_repo(ui.principal, run.repo.repo_id)
    new = await rerun_service.rerun(
        ctx, name=name, user=ui.principal.name, reload=form.get("reload") == "1"
    )
    return _see_other(f"/runs/{seg(new.name)}")


@router.post("/runs/{name}/stop")
async def stop_run(request: Request, name: str) -> Response:
    return await _stop(request, name, abort=False)


@router.post("/runs/{name}/abort")
async def abort_run(request: Request, name: str) -> Response:
    return await _stop(request, name, abort=True)


async def _stop(request: Request, name: str, *, abort: bool) -> Response:
    ui, _ = await changing(request)
    ctx = ctx_of(request)
    await user_service.require_visible_run(ctx, ui.principal, name)
    await run_service.stop_run(ctx, name=name, abort=abort)
    return _see_other(f"/runs/{seg(name)}")


@router.post("/runs/{name}/tag")
async def tag_run(request: Request, name: str) -> Response:
    ui, form = await changing(request)
    ctx = ctx_of(request)
    await user_service.require_visible_run(ctx, ui.principal, name)
    await tag_service.add_tag(
        ctx, name=form.get("tag", ""), run_name=name, repos=ui.principal.visible_repos
    )
    return _see_other(f"/runs/{seg(name)}")


# --- live updates ---------------------------------------------------------------------------
def _event(kind: str, data: object, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


def _sse(events: AsyncIterator[bytes]) -> StreamingResponse:
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(events, media_type="text/event-stream", headers=headers)


async def _still_signed_in(request: Request) -> bool:
    return await sessions.lookup(ctx_of(request), request.cookies.get(COOKIE, "")) is not None


@router.get("/ui/events")
async def events(request: Request, ui: Data) -> StreamingResponse:
    """The tab's one stream on list and run pages: `change` whenever runs, jobs or runners
    changed in this process (the page then fetches its fragment), a ping every 15 s (other
    server processes' changes show by then too). Ends when the session does."""
    ctx = ctx_of(request)

    async def stream() -> AsyncIterator[bytes]:
        counter = 0
        yield b"retry: 3000\n\n"
        event = ctx.notifier.current()
        while True:
            await Notifier.wait(event, PING_SECONDS)
            if ctx.draining:  # the server exits: the browser reconnects to the next one
                return
            # taken before the page refreshes: a change from now on wakes the next wait
            event = ctx.notifier.current()
            if not await _still_signed_in(request):
                yield _event("signout", {})
                return
            counter += 1
            yield _event("change", {}, counter)
            await asyncio.sleep(0.5)  # at most two refreshes a second

    return _sse(stream())


# --- logs -----------------------------------------------------------------------------------
async def _job(ctx: ServerContext, ui: UiSession, name: str, index: int) -> tuple[Run, Job]:
    run = await _visible_run(ctx, ui, name)
    for job in run.jobs:
        if job.index == index:
            return run, job
    raise NotFoundError(f"run '{name}' has no job {index}", hint="see the run's page")


def _indexes(request: Request) -> loglines.LogIndexes:
    found = getattr(request.app.state, "ui_log_indexes", None)
    if not isinstance(found, loglines.LogIndexes):
        found = loglines.LogIndexes()
        request.app.state.ui_log_indexes = found
    return found


async def _has_stream(ctx: ServerContext, job_id: str, stream: str) -> bool:
    async with ctx.connect() as connection:
        found = await connection.scalar(loglines.HAS_STREAM, {"job_id": job_id, "stream": stream})
    return found is not None


def _option(value: str, label: str, chosen: str) -> str:
    return f'<option value="{value}"{" selected" if value == chosen else ""}>{label}</option>'


@router.get("/runs/{name}/jobs/{index}")
async def logs_page(
    request: Request,
    name: str,
    index: int,
    ui: Page,
    stream: str = "both",
    runner: bool = False,
    ts: bool = False,
) -> Response:
    """The log viewer. `stream` (both, stdout, stderr), `runner` (show the runner's own
    messages) and `ts` (timestamps) are the viewer's settings, kept in the URL by logs.js."""
    ctx = ctx_of(request)
    run, job = await _job(ctx, ui, name, index)
    chosen = stream if stream in ("both", "stdout", "stderr") else "both"
    streams = "".join(
        _option(v, label, chosen)
        for v, label in (("both", "stdout and stderr"), ("stdout", "stdout"), ("stderr", "stderr"))
    )
    has_runner = await _has_stream(ctx, job.id, "runner")
    base = f"/ui/api/runs/{seg(run.name)}/jobs/{index}"
    reason = job.reason.value if job.reason else None
    download = f"/runs/{seg(run.name)}/jobs/{index}/log.txt"
    body = f"""<p class="crumbs"><a href="/">Runs</a> / <a href="/runs/{esc(seg(run.name))}">
{esc(run.name)}</a> /</p><h1>{esc(job.workflow_name or "job")} #{index} logs</h1>
<p>Status: <span id="job-status">{status(job.status, reason)}</span>
<span id="line-count" aria-live="polite"></span></p>
<div class="logbar" role="toolbar" aria-label="Log tools">
<form id="log-search" role="search">
<label>Search <input id="log-q" name="q" maxlength="200"></label><button type="submit">Find</button>
<button type="button" id="log-prev" aria-label="Previous match">↑</button>
<button type="button" id="log-next" aria-label="Next match">↓</button>
<span id="log-matches" aria-live="polite"></span></form>
<label>Streams <select id="log-streams">{streams}</select></label>
<label id="log-runner-toggle"{"" if has_runner else " hidden"}><input type="checkbox"
 id="log-runner"{" checked" if runner else ""}> Runner messages</label>
<label><input type="checkbox" id="log-time"{" checked" if ts else ""}> Timestamps</label>
<label><input type="checkbox" id="log-follow" checked> Follow</label>
<button type="button" id="log-end">Jump to end</button>
<a class="button" href="{esc(download)}" download>Download</a></div>
<div id="log" class="log" tabindex="0" role="log" aria-label="Output" data-base="{esc(base)}">
<div class="log-spacer"></div></div>"""
    return _html(layout(f"Logs {run.name}", body, ui=ui, nav="runs", scripts=("logs.js",)))


@router.get("/ui/api/runs/{name}/jobs/{index}/lines")
async def log_lines(
    request: Request,
    name: str,
    index: int,
    ui: Data,
    start: Annotated[int, Query(ge=0)] = 0,
    count: Annotated[int, Query(ge=1, le=loglines.MAX_PAGE_LINES)] = 200,
    streams: Annotated[str | None, Query(max_length=100)] = None,
) -> JSONResponse:
    """Lines `start`.. of the job's log as HTML (ANSI colours as classes), with the total;
    of `streams` only (comma-separated; all without it), numbered within them."""
    ctx = ctx_of(request)
    chosen = loglines.parse_streams(streams)
    _, job = await _job(ctx, ui, name, index)
    found = await _indexes(request).of(ctx, job.id, chosen)
    lines = await loglines.read_lines(ctx, job.id, found, start, count, chosen)
    body = {"total": found.lines, "last_seq": found.last_seq, "lines": [x.json() for x in lines]}
    return JSONResponse(body, headers=_NO_STORE)


@router.get("/ui/api/runs/{name}/jobs/{index}/search")
async def log_search(
    request: Request,
    name: str,
    index: int,
    ui: Data,
    q: Annotated[str, Query(min_length=1, max_length=200)],
    streams: Annotated[str | None, Query(max_length=100)] = None,
) -> JSONResponse:
    ctx = ctx_of(request)
    chosen = loglines.parse_streams(streams)
    _, job = await _job(ctx, ui, name, index)
    found = await _indexes(request).of(ctx, job.id, chosen)
    matches, more = await loglines.search(ctx, job.id, found, q, chosen)
    return JSONResponse({"matches": matches, "more": more}, headers=_NO_STORE)


@router.get("/ui/api/runs/{name}/jobs/{index}/stream")
async def log_stream(
    request: Request,
    name: str,
    index: int,
    ui: Data,
    streams: Annotated[str | None, Query(max_length=100)] = None,
) -> StreamingResponse:
    """`lines` events (id: the last log seq seen, data: the line total of `streams` and
    whether the runner's own messages are in the log) as the log grows, `status` events as
    the job's status changes, `end` once it finished and all is sent. A reconnect's
    `Last-Event-ID` resumes after that seq."""
    ctx = ctx_of(request)
    chosen = loglines.parse_streams(streams)
    run, job = await _job(ctx, ui, name, index)
    indexes = _indexes(request)
    try:
        after = int(request.headers.get("last-event-id", "-1"))
    except ValueError:
        after = -1

    async def stream() -> AsyncIterator[bytes]:
        nonlocal after, job
        yield b"retry: 2000\n\n"
        last_status = None
        has_runner = False
        while True:
            event = ctx.notifier.current()
            found = await indexes.of(ctx, job.id, chosen)
            if found.last_seq > after:
                after = found.last_seq
                has_runner = has_runner or await _has_stream(ctx, job.id, "runner")
                yield _event("lines", {"total": found.lines, "runner": has_runner}, after)
            current = job.status.value
            if current != last_status:
                last_status = current
                reason = job.reason.value if job.reason else None
                yield _event("status", {"status": current, "reason": reason})
            if job.status.is_finished():
                yield _event("end", {"total": found.lines})
                return
            await Notifier.wait(event, 5.0)
            if ctx.draining:  # the server exits: `Last-Event-ID` resumes on the next one
                return
            if not await _still_signed_in(request):
                yield _event("signout", {})
                return
            _, job = await _job(ctx, ui, run.name, index)

    return _sse(stream())


@router.get("/runs/{name}/jobs/{index}/log.txt")
async def log_download(request: Request, name: str, index: int, ui: Data) -> StreamingResponse:
    """The whole log as the job printed it (colour codes included), read in pages."""
    ctx = ctx_of(request)
    run, job = await _job(ctx, ui, name, index)

    async def chunks() -> AsyncIterator[bytes]:
        after = -1
        while True:
            async with ctx.connect() as connection:
                rows = (
                    await connection.execute(
                        loglines.ROWS_AFTER, {"job_id": job.id, "after": after, "limit": 500}
                    )
                ).all()
            if not rows:
                return
            after = rows[-1][0]
            yield "".join(data for _, data in rows).encode()

    filename = f"{run.name}-{index}.log".replace('"', "")
    headers = {"Content-Disposition": f'attachment; filename="{filename}"', **_NO_STORE}
    return StreamingResponse(chunks(), media_type="text/plain; charset=utf-8", headers=headers)


# --- artifacts ------------------------------------------------------------------------------
async def _files(ctx: ServerContext, ui: UiSession, name: str) -> tuple[Run, dict[str, art.File]]:
    run = await _visible_run(ctx, ui, name)
    return run, art.tree(await run_service.run_artifacts(ctx, run_name=name))


def _crumbs(run: Run, folder: str) -> str:
    base = f"/runs/{seg(run.name)}/artifacts"
    parts = [
        f'<a href="/runs/{esc(seg(run.name))}">{esc(run.name)}</a>',
        f'<a href="{esc(base)}">artifacts</a>',
    ]
    walked = []
    for name in [p for p in folder.split("/") if p]:
        walked.append(name)
        parts.append(f'<a href="{esc(url(base, path="/".join(walked)))}">{esc(name)}</a>')
    return '<p class="crumbs">' + " / ".join(parts) + "</p>"


@router.get("/runs/{name}/artifacts")
async def artifacts_page(request: Request, name: str, ui: Page, path: str = "") -> Response:
    ctx = ctx_of(request)
    run, files = await _files(ctx, ui, name)
    folder = path.strip("/")
    folders, direct = art.listing(files, folder)
    base = f"/runs/{seg(run.name)}/artifacts"
    if folder and not folders and not direct:
        raise NotFoundError(f"no folder '{folder}' in the artifacts of run '{name}'")
    items = [
        f'<tr><td><a href="{esc(url(base, path=f"{folder}/{n}".strip("/")))}">{esc(n)}/</a></td>'
        f"<td>{size(total)}</td><td>{count} files</td><td>"
        f'<a href="{esc(url(base + "/zip", path=f"{folder}/{n}".strip("/")))}" download>'
        "zip</a></td></tr>"
        for n, total, count in folders
    ]
    for entry in direct:
        file_url = url(base + "/file", path=entry.path)
        items.append(
            f'<tr><td><a href="{esc(url(base + "/preview", path=entry.path))}">'
            f"{esc(entry.path.rsplit('/', 1)[-1])}</a></td><td>{size(entry.size)}</td>"
            f'<td><code title="sha256">{esc(entry.digest[:12])}</code></td>'
            f'<td><a href="{esc(file_url)}" download>download</a></td></tr>'
        )
    empty = '<tr><td colspan="4" class="empty">No artifacts.</td></tr>'
    zip_all = (
        f'<a class="button" href="{esc(url(base + "/zip", path=folder or None))}" download>'
        "Download folder as zip</a>"
        if files
        else ""
    )
    cli = f"dstack cp {run.name} ."
    body = f"""{_crumbs(run, folder)}<h1>Artifacts</h1><div class="actions">{zip_all}
<code class="cli">{esc(cli)}</code></div><div class="scroll"><table aria-label="Files">
<thead><tr><th scope="col">Name</th><th scope="col">Size</th><th scope="col">Digest</th>
<th scope="col">Download</th></tr></thead><tbody>{"".join(items) or empty}</tbody></table></div>"""
    return _html(layout(f"Artifacts {run.name}", body, ui=ui, nav="runs"))


def _file(files: dict[str, art.File], path: str, name: str) -> art.File:
    entry = files.get(path.strip("/"))
    if entry is None:
        raise NotFoundError(f"no file '{path}' in the artifacts of run '{name}'")
    return entry


@router.get("/runs/{name}/artifacts/file")
async def artifact_file(
    request: Request, name: str, ui: Data, path: str, inline: bool = False
) -> StreamingResponse:
    ctx = ctx_of(request)
    _, files = await _files(ctx, ui, name)
    entry = _file(files, path, name)
    filename = entry.path.rsplit("/", 1)[-1].replace('"', "")
    kind = "inline" if inline and art.is_image(entry.path) else "attachment"
    headers = {
        "Content-Disposition": f'{kind}; filename="{filename}"',
        "Content-Length": str(entry.size),
        "X-Content-Type-Options": "nosniff",
    }
    media = art.media_type(entry.path) if kind == "inline" else "application/octet-stream"
    body = iterate_in_threadpool(iter(ctx.blobs.open(entry.digest)))
    return StreamingResponse(body, media_type=media, headers=headers)


@router.get("/runs/{name}/artifacts/preview")
async def artifact_preview(request: Request, name: str, ui: Page, path: str) -> Response:
    ctx = ctx_of(request)
    run, files = await _files(ctx, ui, name)
    entry = _file(files, path, name)
    base = f"/runs/{seg(run.name)}/artifacts"
    folder = entry.path.rsplit("/", 1)[0] if "/" in entry.path else ""
    if art.is_image(entry.path):
        src = url(base + "/file", path=entry.path, inline="1")
        shown = f'<img src="{esc(src)}" alt="{esc(entry.path)}">'
    else:
        data = await asyncio.to_thread(_head, ctx, entry.digest)
        text = data.decode("utf-8", "replace")
        cut = " (first 256 KiB)" if entry.size > art.PREVIEW_BYTES else ""
        shown = f'<p class="hint">{size(entry.size)}{cut}</p><pre class="preview">{esc(text)}</pre>'
    download = url(base + "/file", path=entry.path)
    body = (
        f"{_crumbs(run, folder)}<h1>{esc(entry.path.rsplit('/', 1)[-1])}</h1>"
        f'<div class="actions"><a class="button" href="{esc(download)}" download>Download</a>'
        f"</div>{shown}"
    )
    return _html(layout(entry.path, body, ui=ui, nav="runs"))


def _head(ctx: ServerContext, digest: str) -> bytes:
    data = bytearray()
    chunks = ctx.blobs.open(digest)
    for chunk in chunks:
        data += chunk
        if len(data) >= art.PREVIEW_BYTES:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
            break
    return bytes(data[: art.PREVIEW_BYTES])


@router.get("/runs/{name}/artifacts/zip")
async def artifact_zip(request: Request, name: str, ui: Data, path: str = "") -> StreamingResponse:
    ctx = ctx_of(request)
    run, files = await _files(ctx, ui, name)
    folder = path.strip("/")
    chosen = art.under(files, folder)
    if not chosen:
        raise NotFoundError(f"no folder '{folder}' in the artifacts of run '{name}'")
    filename = (f"{run.name}-{folder.replace('/', '-')}" if folder else run.name) + ".zip"
    headers = {"Content-Disposition": f'attachment; filename="{filename.replace(chr(34), "")}"'}
    body = iterate_in_threadpool(art.zip_stream(ctx.blobs, chosen, folder))
    return StreamingResponse(body, media_type="application/zip", headers=headers)


# --- tags, runners, secrets, users ----------------------------------------------------------
@router.get("/tags")
async def tags_page(request: Request, ui: Page) -> Response:
    ctx = ctx_of(request)
    found = await tag_service.list_tags(ctx, repos=ui.principal.visible_repos)
    rows = "".join(
        f"<tr><td>{esc(t.name)}</td><td>{esc(t.repo_id)}</td>"
        f'<td><a href="/runs/{esc(seg(t.run_name))}">{esc(t.run_name)}</a></td>'
        f"<td>{esc(t.workflow_name or '-')}</td><td>{size(t.size)}</td>"
        f"<td>{when(t.created_at)}</td>"
        f'<td><a href="/runs/{esc(seg(t.run_name))}/artifacts">artifacts</a></td></tr>'
        for t in found
    )
    empty = '<tr><td colspan="7" class="empty">No tags yet.</td></tr>'
    body = f"""<h1>Tags</h1><div class="scroll"><table aria-label="Tags"><thead><tr>
<th scope="col">Tag</th><th scope="col">Repository</th><th scope="col">Run</th>
<th scope="col">Workflow</th><th scope="col">Size</th><th scope="col">Created</th>
<th scope="col">Artifacts</th></tr></thead><tbody>{rows or empty}</tbody></table></div>"""
    return _html(layout("Tags", body, ui=ui, nav="tags"))


@router.get("/runners")
async def runners_page(request: Request, ui: Page) -> Response:
    ctx = ctx_of(request)
    found = await runner_service.list_runners(ctx)
    now = ctx.clock()
    rows = []
    for r in found:
        res = r.resources
        gpus = ", ".join(f"{g.name} {g.memory_mib // 1024} GiB" for g in res.gpus) or "-"
        labels = ", ".join(f"{k}={v}" for k, v in sorted(r.labels.items())) or "-"
        beat = "-"
        if r.last_heartbeat is not None:
            beat = f"{int((now - r.last_heartbeat).total_seconds())} s ago"
        cloud = "-"
        if r.instance is not None:
            cloud = f"{esc(r.instance.instance_type)} {money(r.instance.price)}/h"
        rows.append(
            f"<tr><td>{esc(r.name)}</td><td>{esc(r.host)}</td><td>{status(r.status.value)}</td>"
            f"<td>{res.cpus} CPU, {res.memory_mib // 1024} GiB, {gpus}</td><td>{esc(labels)}</td>"
            f"<td>{esc(r.backend)}</td><td>{cloud}</td><td>{len(r.running_jobs)}</td>"
            f"<td>{beat}</td></tr>"
        )
    empty = '<tr><td colspan="9" class="empty">No runners.</td></tr>'
    body = f"""<h1>Runners</h1><div class="scroll"><table aria-label="Runners"><thead><tr>
<th scope="col">Name</th><th scope="col">Host</th><th scope="col">Status</th>
<th scope="col">Resources</th><th scope="col">Labels</th><th scope="col">Backend</th>
<th scope="col">Instance</th><th scope="col">Jobs</th><th scope="col">Heartbeat</th></tr>
</thead><tbody>{"".join(rows) or empty}</tbody></table></div>"""
    return _html(layout("Runners", body, ui=ui, nav="runners"))


def _secret_scopes(ui: UiSession) -> list[str | None]:
    """The secret scopes the user may see: the repositories they may see (`None`: global,
    admins only; a user seeing every repository lists per repository via the form)."""
    if ui.principal.repos is not None:
        return list(ui.principal.visible_repos or [])
    return [None] if is_admin(ui.principal) else []


@router.get("/secrets")
async def secrets_page(request: Request, ui: Page, repo: str = "") -> Response:
    ctx = ctx_of(request)
    scopes = _secret_scopes(ui)
    if repo:
        _check_secret_scope(ui, repo)  # 404 for a repository the user may not see
        scopes = [repo]
    rows = []
    for scope in scopes:
        for secret in await secret_service.list_secrets(ctx, repo_id=scope):
            delete = post_button(
                ui,
                url("/secrets/delete", name=secret.name, repo=scope),
                "Delete",
                confirm=f"Delete secret {secret.name}?",
            )
            rows.append(
                f"<tr><td>{esc(secret.name)}</td><td>{esc(scope or 'global')}</td>"
                f"<td>{when(secret.updated_at)}</td><td>{delete}</td></tr>"
            )
    empty = '<tr><td colspan="4" class="empty">No secrets.</td></tr>'
    body = f"""<h1>Secrets</h1>
<form method="get" action="/secrets" class="filters"><label>Repository
<input name="repo" value="{esc(repo)}"></label><button type="submit">Show</button></form>
<div class="scroll"><table aria-label="Secrets"><thead><tr><th scope="col">Name</th>
<th scope="col">Scope</th><th scope="col">Updated</th><th scope="col"></th></tr></thead>
<tbody>{"".join(rows) or empty}</tbody></table></div>
<h2>Add a secret</h2><form method="post" action="/secrets" class="stack">
<input type="hidden" name="csrf" value="{esc(ui.csrf)}">
<label>Name <input name="name" required maxlength="200"></label>
<label>Value <input name="value" type="password" required autocomplete="off"></label>
<label>Repository (empty: global, admins) <input name="repo" value="{esc(repo)}"></label>
<button type="submit">Add</button></form>"""
    return _html(layout("Secrets", body, ui=ui, nav="secrets"))


def _check_secret_scope(ui: UiSession, repo: str | None) -> None:
    require_secret_scope(ui.principal, repo)


@router.post("/secrets")
async def add_secret(request: Request) -> Response:
    ui, form = await changing(request)
    repo = form.get("repo") or None
    _check_secret_scope(ui, repo)
    await secret_service.add_secret(
        ctx_of(request), name=form.get("name", ""), value=form.get("value", ""), repo_id=repo
    )
    return _see_other(url("/secrets", repo=repo))


@router.post("/secrets/delete")
async def delete_secret(request: Request, name: str, repo: str | None = None) -> Response:
    ui, _ = await changing(request)
    _check_secret_scope(ui, repo or None)
    await secret_service.delete_secret(ctx_of(request), name=name, repo_id=repo or None)
    return _see_other(url("/secrets", repo=repo))


def _require_admin(ui: UiSession) -> None:
    if not is_admin(ui.principal):
        raise Forbidden("only admins see users")


@router.get("/users")
async def users_page(request: Request, ui: Page) -> Response:
    _require_admin(ui)
    found = await user_service.list_users(ctx_of(request))
    rows = "".join(
        f"<tr><td>{esc(u.name)}</td><td>{'admin' if u.is_admin else 'user'}</td>"
        f"<td>{esc(', '.join(u.repos) if u.repos is not None else 'all')}</td>"
        f"<td>{when(u.created_at)}</td></tr>"
        for u in found
    )
    body = f"""<h1>Users</h1><div class="scroll"><table aria-label="Users"><thead><tr>
<th scope="col">Name</th><th scope="col">Role</th><th scope="col">Repositories</th>
<th scope="col">Created</th></tr></thead><tbody>{rows}</tbody></table></div>
<p class="hint">Add users and hand out tokens with <code>dstack users add</code>: a token is
shown once.</p>"""
    return _html(layout("Users", body, ui=ui, nav="users"))
