"""The runs list and a run's page: what they show, and keyset pages of runs."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime

from dstack.models.job import Job, JobStatus
from dstack.models.run import Run
from dstack.server.context import ServerContext
from dstack.server.errors import InvalidRequestError
from dstack.server.services import runs as run_service
from dstack.server.services.reruns import RerunInfo
from dstack.ui import graph
from dstack.ui.html import (
    csrf_field,
    duration,
    esc,
    money,
    post_button,
    seg,
    status,
    url,
    when,
)
from dstack.ui.sessions import UiSession

PAGE_SIZE = 50
_BATCH = 200
_MAX_SCANNED = 5000  # runs looked at for one page when filtering by status
_PHASES = ("queued", "provisioning", "downloading", "running", "uploading")


@dataclass(frozen=True)
class Filters:
    repo: str | None = None
    workflow: str | None = None
    status: str | None = None
    user: str | None = None

    @classmethod
    def of(cls, query: dict[str, str]) -> Filters:
        values = {k: (query.get(k) or None) for k in ("repo", "workflow", "status", "user")}
        for value in values.values():
            if value is not None and len(value) > 500:
                raise InvalidRequestError("filter value too long", hint="at most 500 characters")
        if values["status"] not in (None, "active", "finished", *JobStatus):
            raise InvalidRequestError(
                f"unknown status '{values['status']}'",
                hint="one of: active, finished, " + ", ".join(JobStatus),
            )
        return cls(**values)

    def query(self) -> dict[str, str | None]:
        return {
            "repo": self.repo,
            "workflow": self.workflow,
            "status": self.status,
            "user": self.user,
        }

    def keeps(self, run: Run) -> bool:
        if self.status is None:
            return True
        if self.status == "active":
            return not run.status.is_finished()
        if self.status == "finished":
            return run.status.is_finished()
        return run.status.value == self.status


def encode_cursor(run: Run) -> str:
    raw = f"{run.submitted_at.isoformat()}|{run.name}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> tuple[datetime, str] | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, _, name = raw.partition("|")
        moment = datetime.fromisoformat(at)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidRequestError("invalid cursor", hint="start from the first page") from None
    return moment, name


async def page(
    ctx: ServerContext, ui: UiSession, filters: Filters, cursor: str | None
) -> tuple[list[Run], str | None]:
    """A page of runs the user may see, newest first, and the cursor of the next page (None:
    no more). A status filter is applied to batches read in key order, at most
    `_MAX_SCANNED` runs per page (the next cursor continues where the scan stopped)."""
    repos = ui.principal.visible_repos
    if filters.repo is not None and repos is not None and filters.repo not in repos:
        return [], None
    before = decode_cursor(cursor)
    found: list[Run] = []
    scanned = 0
    while True:
        limit = PAGE_SIZE + 1 if filters.status is None else _BATCH
        batch = await run_service.list_runs_page(
            ctx,
            limit=limit,
            before=before,
            repos=repos,
            repo_id=filters.repo,
            workflow=filters.workflow,
            user=filters.user,
        )
        for run in batch:
            scanned += 1
            before = (run.submitted_at, run.name)
            if filters.keeps(run):
                found.append(run)
                if len(found) > PAGE_SIZE:
                    return found[:PAGE_SIZE], encode_cursor(found[PAGE_SIZE - 1])
        if len(batch) < limit:
            return found, None
        if scanned >= _MAX_SCANNED:
            last = batch[-1]
            return found, encode_cursor(last)


def run_duration(run: Run, now: datetime) -> float | None:
    starts = [j.submitted_at for j in run.jobs]
    if not starts:
        return None
    if run.status.is_finished():
        ends = [j.finished_at for j in run.jobs if j.finished_at is not None]
        end = max(ends) if ends else now
    else:
        end = now
    return max(0.0, (end - min(starts)).total_seconds())


def run_reason(run: Run) -> str | None:
    for job in run.jobs:
        if job.status == run.status and job.reason is not None:
            return job.reason.value
    return None


def rows(runs: list[Run], now: datetime) -> str:
    if not runs:
        return '<tr><td colspan="10" class="empty">No runs match.</td></tr>'
    out = []
    for run in runs:
        link = f"/runs/{seg(run.name)}"
        pick = (
            ""
            if run.status.is_finished()
            else f'<input type="checkbox" name="run" value="{esc(run.name)}" form="stop-runs" '
            f'aria-label="Select {esc(run.name)}">'
        )
        out.append(
            f'<tr data-run="{esc(run.name)}"><td class="pick">{pick}</td>'
            f'<td><a href="{esc(link)}">{esc(run.name)}</a></td>'
            f"<td>{esc(run.repo.repo_id)}</td>"
            f"<td>{esc(run.workflow_name or run.provider or '-')}</td>"
            f"<td>{esc(run.user)}</td><td>{status(run.status, run_reason(run))}</td>"
            f"<td>{when(run.submitted_at)}</td><td>{duration(run_duration(run, now))}</td>"
            f"<td>{money(run.cost)}</td><td>{esc(run.tag or '')}</td></tr>"
        )
    return "".join(out)


def list_body(
    runs: list[Run],
    filters: Filters,
    cursor: str | None,
    nxt: str | None,
    now: datetime,
    ui: UiSession,
) -> str:
    options = "".join(
        f'<option value="{v}"{" selected" if filters.status == v else ""}>{v or "any"}</option>'
        for v in ("", "active", "finished", *JobStatus)
    )
    older = url("/", **filters.query(), cursor=nxt)
    more = f'<a class="button" rel="next" href="{esc(older)}">Older runs</a>' if nxt else ""
    fragment = url("/ui/fragments/runs", **filters.query(), cursor=cursor)
    first = (
        f'<a class="button" href="{esc(url("/", **filters.query()))}">Newest</a>' if cursor else ""
    )
    return f"""<h1>Runs</h1>
<form class="filters" method="get" action="/" role="search" aria-label="Filter runs">
<label>Repository <input name="repo" value="{esc(filters.repo or "")}"></label>
<label>Workflow <input name="workflow" value="{esc(filters.workflow or "")}"></label>
<label>Status <select name="status">{options}</select></label>
<label>User <input name="user" value="{esc(filters.user or "")}"></label>
<button type="submit">Filter</button> <a href="/">Clear</a></form>
<p class="live" aria-live="polite"><span id="updated" data-live="runs">live</span></p>
<form id="stop-runs" method="post" action="/runs/stop" class="actions"
 data-confirm="Stop the selected runs?">{csrf_field(ui)}
<input type="hidden" name="back" value="{esc(url("/", **filters.query(), cursor=cursor))}">
<button type="submit">Stop selected</button></form>
<div class="scroll"><table class="runs" aria-label="Runs"><thead><tr>
<th scope="col"><input type="checkbox" id="pick-all" aria-label="Select all unfinished runs">
</th><th scope="col">Run</th>
<th scope="col">Repository</th><th scope="col">Workflow</th><th scope="col">User</th>
<th scope="col">Status</th><th scope="col">Submitted</th><th scope="col">Duration</th>
<th scope="col">Cost</th><th scope="col">Tag</th></tr></thead>
<tbody id="runs-rows" data-fragment="{esc(fragment)}">
{rows(runs, now)}</tbody></table></div><nav class="pager" aria-label="Pages">{first} {more}</nav>"""


def timeline(job: Job) -> str:
    timings = job.timings
    values = [(p, getattr(timings, p)) for p in _PHASES]
    total = sum(v for _, v in values if v) or 0
    if not total:
        return '<div class="timeline empty">no phases yet</div>'
    bars = "".join(
        f'<span class="phase p-{p}" style="flex-grow:{max(v / total, 0.01):.4f}" '
        f'title="{p}: {duration(v)}">{p} {duration(v)}</span>'
        for p, v in values
        if v is not None
    )
    return f'<div class="timeline" role="list" aria-label="Phases">{bars}</div>'


def run_detail(
    run: Run,
    ui: UiSession,
    now: datetime,
    *,
    local: bool = False,
    rerun: RerunInfo | None = None,
) -> str:
    """The live part of a run's page: summary, graph, jobs."""
    jobs_html = []
    for job in run.jobs:
        logs = f"/runs/{seg(run.name)}/jobs/{job.index}"
        cached = (
            f' <span class="cached">cached from <a href="/runs/{seg(job.reused_from)}">'
            f"{esc(job.reused_from)}</a></span>"
            if job.reused_from
            else ""
        )
        instance = ""
        if job.instance is not None:
            i = job.instance
            instance = (
                f"{esc(i.instance_type)} ({esc(i.backend)}, {'spot' if i.spot else 'on-demand'}, "
                f"${i.price:.4f}/h)"
            )
        message = f'<div class="message">{esc(job.message)}</div>' if job.message else ""
        jobs_html.append(
            f'<tr><td><a href="{esc(logs)}">{esc(job.workflow_name or "job")} #{job.index}</a>'
            f"{cached}</td><td>{status(job.status, job.reason.value if job.reason else None)}"
            f"{message}</td><td>{esc(job.runner_name or '-')} {instance}</td>"
            f"<td>{'-' if job.exit_code is None else job.exit_code}</td>"
            f"<td>{job.attempt + 1 if job.history else 1}</td>"
            f"<td>{timeline(job)}</td><td>{money(job.cost)}</td></tr>"
        )
    actions = []
    if not run.status.is_finished():
        actions.append(
            post_button(ui, f"/runs/{seg(run.name)}/stop", "Stop", confirm=f"Stop run {run.name}?")
        )
        actions.append(
            post_button(
                ui, f"/runs/{seg(run.name)}/abort", "Abort", confirm=f"Abort run {run.name}?"
            )
        )
    tag_form = ""
    if run.status is JobStatus.DONE:
        tag_form = (
            f'<form method="post" action="/runs/{esc(seg(run.name))}/tag" class="inline">'
            f'<input type="hidden" name="csrf" value="{esc(ui.csrf)}">'
            '<label>Tag <input name="tag" required maxlength="200"></label>'
            '<button type="submit">Add tag</button></form>'
        )
    if rerun is not None and rerun.possible:
        actions.append(post_button(ui, f"/runs/{seg(run.name)}/rerun", "Re-run"))
        actions.append(
            f'<form method="post" action="/runs/{esc(seg(run.name))}/rerun" class="inline">'
            f'{csrf_field(ui)}<input type="hidden" name="reload" value="1">'
            '<button type="submit" title="Run every job, even those an earlier result fits">'
            "Re-run without cache</button></form>"
        )
    origin = (
        f'<div><dt>Re-run of</dt><dd><a href="/runs/{esc(seg(rerun.of))}">{esc(rerun.of)}</a>'
        "</dd></div>"
        if rerun is not None and rerun.of
        else ""
    )
    apps = app_links(run) if local else ""
    return f"""<dl class="summary">
<div><dt>Status</dt><dd id="run-status">{status(run.status, run_reason(run))}</dd></div>
<div><dt>Repository</dt><dd>{esc(run.repo.repo_id)}</dd></div>
<div><dt>Workflow</dt><dd>{esc(run.workflow_name or run.provider or "-")}
 {esc(" ".join(run.args))}</dd></div>
<div><dt>User</dt><dd>{esc(run.user)}</dd></div>
<div><dt>Submitted</dt><dd>{when(run.submitted_at)}</dd></div>
<div><dt>Duration</dt><dd>{duration(run_duration(run, now))}</dd></div>
<div><dt>Cost</dt><dd>{money(run.cost)}</dd></div>
<div><dt>Tag</dt><dd>{esc(run.tag or "-")}</dd></div>{origin}</dl>
<div class="actions">{"".join(actions)} {tag_form}
<a class="button" href="/runs/{esc(seg(run.name))}/artifacts">Artifacts</a></div>{apps}
<h2>Jobs</h2><div class="scroll">{graph.svg(run.name, run.jobs)}</div>
<div class="scroll"><table aria-label="Jobs"><thead><tr><th scope="col">Job</th>
<th scope="col">Status</th><th scope="col">Runner</th><th scope="col">Exit code</th>
<th scope="col">Attempt</th><th scope="col">Phases</th><th scope="col">Cost</th></tr></thead>
<tbody>{"".join(jobs_html)}</tbody></table></div>{cache_explanation(run)}"""


def cache_explanation(run: Run) -> str:
    """Why each job ran, or which run's results it reused: the cache's decision at submit,
    as `dstack plan` explained it beforehand (nothing for runs from before it was kept)."""
    items = []
    for job in run.jobs:
        name = f"{esc(job.workflow_name or 'job')} #{job.index}"
        if job.reused_from:
            what = (
                f'reused the results of <a href="/runs/{esc(seg(job.reused_from))}">'
                f"{esc(job.reused_from)}</a>"
            )
        elif job.cache_reason:
            reasons = "".join(f"<li>{esc(r)}</li>" for r in job.cache_reason.split("; "))
            what = f'ran: <ul class="reasons">{reasons}</ul>'
        else:
            continue
        items.append(f"<li><strong>{name}</strong> {what}</li>")
    if not items:
        return ""
    return (
        '<h2 id="cache">Cache</h2><p class="hint">Why each job ran or what it reused, decided '
        "when the run was submitted (<code>dstack plan</code> shows it before).</p>"
        f'<ul class="cache" aria-labelledby="cache">{"".join(items)}</ul>'
    )


def app_links(run: Run) -> str:
    """Links to the apps of a run's running jobs, on the local server's runner (this
    machine: its ports are the browser's `localhost`)."""
    links = []
    for job in run.jobs:
        if job.status is not JobStatus.RUNNING or job.apps_ready_at is None:
            continue
        for app in job.spec.apps:
            if app.port_index >= len(job.host_ports):
                continue
            port = job.host_ports[app.port_index]
            target = url(f"http://localhost:{port}{app.url_path}", **app.url_query)
            links.append(
                f'<li><a href="{esc(target)}" target="_blank" rel="noopener">'
                f"{esc(app.name)}</a></li>"
            )
    return f'<h2>Apps</h2><ul class="apps">{"".join(links)}</ul>' if links else ""
