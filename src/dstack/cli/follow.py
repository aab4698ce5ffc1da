"""Streaming a run's logs to the terminal, shared by `dstack run`, `dstack logs -f` and
`dstack attach`.

While the server is away (restarted, a network hiccup) the follower rides it out with the
clients' one retry policy (`api.transport.Reconnect`): it says so once on stderr, tries again
with backoff, and carries on from the cursor of the last page it printed, so no line is
printed twice or skipped. After `--reconnect-timeout` seconds it gives up with one line and
exit code 75 (`ServerGoneError`); the run itself keeps going on its runner.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

import click

from dstack.cli.context import local_server
from dstack.cli.render import status_plain
from dstack.cli.spinner import Spinner
from dstack.errors import ServerError, ServerUnreachableError
from dstack.settings import RECONNECT_TIMEOUT

if TYPE_CHECKING:
    from dstack.api.client import Client
    from dstack.api.transport import Reconnect
    from dstack.models.logs import LogEvent
    from dstack.models.run import Run
    from dstack.models.runs_api import LogsPage

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

# Seconds an attached command waits for a server that went away before it gives up.
RECONNECT_FOR = 300.0


def reconnect_option(func: F) -> F:
    """`--reconnect-timeout SECONDS` (or `$DSTACK_RECONNECT_TIMEOUT`) on an attached command."""
    return click.option(
        "--reconnect-timeout",
        "reconnect_timeout",
        type=click.FloatRange(min=0),
        default=RECONNECT_FOR,
        envvar=RECONNECT_TIMEOUT,
        show_default=True,
        metavar="SECONDS",
        help="While the server is unreachable, keep reconnecting this long, then exit with 75.",
    )(func)


def reconnect_for(
    client: Client,
    run_name: str,
    *,
    remote: str | None,
    give_up_after: float,
    err: TextIO | None = None,
) -> Reconnect:
    """How an attached command rides out its server's absence. For the local server (`remote`
    None) each try first finds it again, starting it on demand as any command would: it
    listens on a new port after each start."""
    # Imported here: `--help` of the commands that take `--reconnect-timeout` skips httpx.
    from dstack.api.transport import Reconnect

    stream = err or sys.stderr

    def say(message: str) -> None:
        stream.write(message + "\n")
        stream.flush()

    return Reconnect(
        say=say,
        give_up_after=give_up_after,
        refresh=None if remote is not None else lambda: _find_local_server(client),
        what_then=f"the run keeps going: `dstack attach {run_name}` once the server is back",
    )


def _find_local_server(client: Client) -> None:
    """Point `client` at the local server as it is now (started again if it is not running)."""
    try:
        url, token = local_server()
    except ServerError as exc:
        raise ServerUnreachableError(exc.message, exc.hint) from exc
    if url != client.base_url or token != client.transport.token:
        client.rebase(url, token)


class LogView:
    """What `dstack logs` and an attached `dstack run` show of a run's events: the runner's own
    messages only with `runner`; in a run of several jobs, each line prefixed by its job's
    name (`[prepare] `), with its node in a multi-node run (`[train] [node 1] `, or
    `[node 1] ` when every job is of one workflow); with `timestamps`, each line starts with
    its time (UTC, `2026-12-07T10:00:00.123Z `). A line split over two events is prefixed
    once."""

    def __init__(self, run: Run, *, timestamps: bool = False, runner: bool = False) -> None:
        self.labels = job_prefixes(run)
        self.timestamps = timestamps
        self.runner = runner
        self._midline: set[tuple[str, str]] = set()  # (job, stream) whose last line is open

    def __call__(self, events: list[LogEvent]) -> list[LogEvent]:
        shown = shown_events(events, runner=self.runner)
        if not self.labels and not self.timestamps:
            return shown
        return [self._prefixed(event) for event in shown]

    def _prefixed(self, event: LogEvent) -> LogEvent:
        label = self.labels.get(event.job_id, "")
        if self.timestamps:
            label = _timestamp(event) + " " + label
        if not label or not event.data:
            return event
        key = (event.job_id, event.stream)
        lines = event.data.splitlines(keepends=True)
        first = 1 if key in self._midline else 0
        data = "".join(lines[:first]) + "".join(label + line for line in lines[first:])
        if event.data.endswith(("\n", "\r")):
            self._midline.discard(key)
        else:
            self._midline.add(key)
        return event.model_copy(update={"data": data})


RUNNER_STREAM = "runner"
"""The stream of the runner's own messages (artifact uploads, image pulls): hidden unless
asked for (`--runner`)."""


def shown_events(events: list[LogEvent], *, runner: bool) -> list[LogEvent]:
    """The events to print: the runner's messages only with `runner`."""
    return events if runner else [e for e in events if e.stream != RUNNER_STREAM]


def job_prefixes(run: Run) -> dict[str, str]:
    """Per job id, what its lines start with: nothing in a run of one job."""
    if len(run.jobs) < 2:
        return {}
    names = {job.workflow_name or job.spec.provider for job in run.jobs}
    prefixes = {}
    for job in run.jobs:
        name = f"[{job.workflow_name or job.spec.provider}] " if len(names) > 1 else ""
        node = f"[node {job.spec.node_rank}] " if job.spec.resources.nodes > 1 else ""
        prefixes[job.id] = name + node
    return {job_id: prefix for job_id, prefix in prefixes.items() if prefix}


def _timestamp(event: LogEvent) -> str:
    when = event.timestamp
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def write_events(events: list[LogEvent], out: TextIO, err: TextIO, as_json: bool = False) -> None:
    """Print a page: consecutive events of one stream go out in one `write` (stderr and the
    runner's messages to `err`)."""
    if as_json:
        out.write("".join(event.model_dump_json() + "\n" for event in events))
        out.flush()
        return
    run: list[str] = []
    target = out
    for event in events:
        stream = out if event.stream == "stdout" else err
        if stream is not target and run:
            target.write("".join(run))
            run = []
        target = stream
        run.append(event.data)
    if run:
        target.write("".join(run))
    out.flush()
    err.flush()


class RunFollower:
    """Prints the logs of a run as they arrive and, on stderr, its jobs' status changes."""

    def __init__(
        self,
        client: Client,
        run_name: str,
        *,
        out: TextIO | None = None,
        err: TextIO | None = None,
        show_status: bool = True,
        since: datetime | None = None,
        as_json: bool = False,
        known: Run | None = None,
        transform: Callable[[list[LogEvent]], list[LogEvent]] | None = None,
        on_run: Callable[[Run], None] | None = None,
        reconnect: Reconnect | None = None,
        timestamps: bool = False,
        runner: bool = False,
        spinner: Spinner | None = None,
    ) -> None:
        """`transform` may change events before they are printed (the attached view rewrites
        app URLs); `on_run` sees the run at each status check (it prints the apps' URLs);
        `reconnect` rides out the server's absence (`reconnect_for`). Both hooks may be
        called again for the same page or run after the server was away. `timestamps` and
        `runner` as `LogView` takes them. At a terminal, with `show_status`, what the run waits
        for (a job to start) is shown by `spinner` (default: one of its own) instead of a
        line per change."""
        self.client = client
        self.run_name = run_name
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.show_status = show_status
        self.since = since
        self.as_json = as_json
        # A run that is already finished (e.g. every job reused at submit) does not change:
        # its final state need not be fetched again. One that is not counts as a first look
        # at its statuses: the next is due a poll interval later, or with the last page.
        self._known = known if known is not None and known.status.is_finished() else None
        self._looked_at_start = known is not None
        self._first_look = known
        self._view: LogView | None = None  # once the run's jobs are known
        self.timestamps = timestamps
        self.runner = runner
        self.spinner = spinner or Spinner(self.err)
        if not show_status or as_json:
            self.spinner.active = False
        self._seen: dict[str, str] = {}
        self.transform = transform
        self.on_run = on_run
        self.reconnect = reconnect
        # Where the next page starts: the cursor of the last page printed. Kept across
        # `follow` calls and reconnections, so no line is printed twice or skipped.
        self.cursor: str | None = None

    def follow(self, poll_seconds: float = 1.0) -> Run:
        """Block until the run is finished and every line was printed; return the final run.

        Without `reconnect`, an unreachable server raises `ServerUnreachableError`; with it,
        the follower waits for the server as `reconnect` says and resumes at `cursor`."""
        try:
            return self._follow(poll_seconds)
        finally:
            self.spinner.close()

    def _follow(self, poll_seconds: float) -> Run:
        known = self._known
        if known is not None and all(job.reused_from for job in known.jobs):
            # Every job reused earlier results at submit: none ran in this run, so it has no
            # line to show, and its final state is known (`dstack run` of a cached chain).
            self._report_status(known)
            if self.on_run is not None:
                self.on_run(known)
            return known
        last_status_check = time.monotonic() if self._looked_at_start else 0.0
        while True:
            page, events = self._call(lambda: self._next_page(poll_seconds))
            if events:
                with self.spinner.paused(ends_line=events[-1].data.endswith("\n")):
                    write_events(events, self.out, self.err, self.as_json)
            self.cursor = page.cursor
            now = time.monotonic()
            if page.finished or now - last_status_check >= poll_seconds:
                last_status_check = now
                run = self._call(functools.partial(self._look_at_run, page))
                if page.finished:
                    return run

    def _call(self, step: Callable[[], T]) -> T:
        return step() if self.reconnect is None else self.reconnect.call(step)

    def _next_page(self, poll_seconds: float) -> tuple[LogsPage, list[LogEvent]]:
        """The page after `cursor`, transformed; nothing printed (safe to do again)."""
        page = self.client.get_logs(
            self.run_name, cursor=self.cursor, since=self.since, wait=poll_seconds, with_run=True
        )
        events = page.events
        if events and self.as_json:
            events = shown_events(events, runner=self.runner)
        elif events:
            if self._view is None:
                self._view = LogView(
                    self._first_look or page.run or self.client.get_run(self.run_name),
                    timestamps=self.timestamps,
                    runner=self.runner,
                )
            events = self._view(events)
        return page, self.transform(events) if self.transform else events

    def _look_at_run(self, page: LogsPage) -> Run:
        """Report the run's statuses (each change once, so safe to do again)."""
        run = self._final_run(page) if page.finished else None
        run = run or self.client.get_run(self.run_name)
        self._report_status(run)
        if self.on_run is not None:
            self.on_run(run)
        return run

    def _final_run(self, page: LogsPage) -> Run | None:
        """The finished run, when the logs page or the caller already told it."""
        return page.run or self._known

    def _report_status(self, run: Run) -> None:
        """Each job's status as it changes, with its message (the reason it waits or failed);
        at a terminal, a job waiting to start is shown by the spinner, not a line."""
        if not self.show_status:
            return
        many = len(run.jobs) > 1
        for job in run.jobs:
            state = status_plain(job.status, job.reason)
            detail = f" — {job.message}" if job.message and not job.status.is_active() else ""
            if self._seen.get(job.id) == state + detail:
                continue
            self._seen[job.id] = state + detail
            node = f" [node {job.spec.node_rank}]" if job.spec.resources.nodes > 1 else ""
            label = f"{job.workflow_name or job.spec.provider}{node}: " if many else ""
            if self.spinner.active:
                waiting = job.status.value in _WAITING
                self.spinner.set(f"job {job.id}", f"{label}{state}{detail}" if waiting else None)
                if waiting:
                    continue
            if job.status.value == "running" and not many:
                continue
            line = f"{label}{state}{detail}"
            if self.spinner.active:
                self.spinner.write(f"\x1b[2m{line}\x1b[0m\n")
            else:
                self.err.write(f"\x1b[2m{line}\x1b[0m\n" if self.err.isatty() else f"{line}\n")
                self.err.flush()


_WAITING = ("submitted", "pending", "provisioning", "downloading")
"""Statuses of a job that has not started yet."""


def exit_code_of(run: Run) -> int:
    """0 when the run is done; else the exit code of the first job that failed, or 1."""
    if run.status.value == "done":
        return 0
    for job in run.jobs:
        if job.status.value in ("failed", "stopped", "aborted") and job.exit_code:
            return job.exit_code
    return 1
