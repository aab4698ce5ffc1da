"""Streaming a run's logs to the terminal, shared by `dstack run` and `dstack logs -f`."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from dstack.api.client import Client
    from dstack.models.logs import LogEvent
    from dstack.models.run import Run
    from dstack.models.runs_api import LogsPage


def write_events(events: list[LogEvent], out: TextIO, err: TextIO, as_json: bool = False) -> None:
    """Print a page: consecutive events of one stream go out in one `write`."""
    if as_json:
        out.write("".join(event.model_dump_json() + "\n" for event in events))
        out.flush()
        return
    run: list[str] = []
    target = out
    for event in events:
        stream = err if event.stream == "stderr" else out
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
    ) -> None:
        """`transform` may change events before they are printed (the attached view rewrites
        app URLs); `on_run` sees the run at each status check (it prints the apps' URLs)."""
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
        self._seen: dict[str, str] = {}
        self.transform = transform
        self.on_run = on_run

    def follow(self, poll_seconds: float = 1.0) -> Run:
        """Block until the run is finished and every line was printed; return the final run."""
        cursor: str | None = None
        last_status_check = time.monotonic() if self._looked_at_start else 0.0
        while True:
            page = self.client.get_logs(
                self.run_name, cursor=cursor, since=self.since, wait=poll_seconds, with_run=True
            )
            events = self.transform(page.events) if self.transform else page.events
            write_events(events, self.out, self.err, self.as_json)
            cursor = page.cursor
            now = time.monotonic()
            if page.finished or now - last_status_check >= poll_seconds:
                last_status_check = now
                run = self._final_run(page) if page.finished else None
                run = run or self.client.get_run(self.run_name)
                self._report_status(run)
                if self.on_run is not None:
                    self.on_run(run)
                if page.finished:
                    return run

    def _final_run(self, page: LogsPage) -> Run | None:
        """The finished run, when the logs page or the caller already told it."""
        return page.run or self._known

    def _report_status(self, run: Run) -> None:
        if not self.show_status:
            return
        from dstack.cli.render import status_plain

        many = len(run.jobs) > 1
        for job in run.jobs:
            state = status_plain(job.status, job.reason)
            if self._seen.get(job.id) == state:
                continue
            self._seen[job.id] = state
            if job.status.value == "running" and not many:
                continue
            label = f"{job.workflow_name or job.spec.provider}: " if many else ""
            detail = f" — {job.message}" if job.message and not job.status.is_active() else ""
            self.err.write(
                f"\x1b[2m{label}{state}{detail}\x1b[0m\n"
                if self.err.isatty()
                else f"{label}{state}{detail}\n"
            )
            self.err.flush()


def exit_code_of(run: Run) -> int:
    """0 when the run is done; else the exit code of the first job that failed, or 1."""
    if run.status.value == "done":
        return 0
    for job in run.jobs:
        if job.status.value in ("failed", "stopped", "aborted") and job.exit_code:
            return job.exit_code
    return 1
