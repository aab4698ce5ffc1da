"""Rendering shared by the commands: consoles, tables, times, statuses."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from dstack.models.job import Job, JobStatus
    from dstack.models.run import Run

_STATUS_STYLE = {
    "done": "green",
    "failed": "red",
    "stopped": "yellow",
    "aborted": "yellow",
    "running": "cyan",
    "pending": "dim",
    "submitted": "dim",
}


def console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def table(*columns: str) -> Table:
    from rich.table import Table

    t = Table(box=None, header_style="bold", pad_edge=False, show_edge=False)
    for column in columns:
        t.add_column(column, overflow="fold")
    return t


def ago(when: datetime | None, now: datetime | None = None) -> str:
    """`just now`, `5 sec ago`, `3 min ago`, `2 hours ago`, then a date."""
    if when is None:
        return "-"
    now = now or datetime.now(UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = (now - when).total_seconds()
    if seconds < 2:
        return "just now"
    if seconds < 60:
        return f"{int(seconds)} sec ago"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        hours = int(seconds // 3600)
        return f"{hours} hour{'s' if hours > 1 else ''} ago"
    return when.astimezone().strftime("%Y-%m-%d %H:%M")


def size(n: int | None) -> str:
    """`512B`, `1.5KB`, `12.0MB`, `1.2GB` (powers of 1024, as the config writes sizes)."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{int(value)}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def status_plain(status: JobStatus, reason: object = None) -> str:
    """`failed (dependency failed)`: the status, with the reason when it tells something."""
    text = status.value
    if reason is not None and status.value in ("pending", "failed", "stopped", "aborted"):
        reason_value = str(getattr(reason, "value", reason))
        if reason_value not in ("done", "exit_code", "stopped_by_user", "aborted_by_user"):
            text += f" ({reason_value.replace('_', ' ')})"
    return text


def status_text(status: JobStatus, reason: object = None) -> str:
    """As `status_plain`, with rich markup for the colour."""
    style = _STATUS_STYLE.get(status.value, "")
    text = status_plain(status, reason)
    return f"[{style}]{text}[/]" if style else text


def job_label(job: Job) -> str:
    return job.workflow_name or job.spec.provider


def runs_table(runs: list[Run]) -> Table:
    """RUN, WORKFLOW, SUBMITTED, STATUS, TAG; multi-job runs get one indented row per job."""
    t = table("RUN", "WORKFLOW", "SUBMITTED", "STATUS", "TAG")
    for run in runs:
        reason = run.jobs[-1].reason if len(run.jobs) == 1 else None
        t.add_row(
            run.name,
            run.workflow_name or run.provider or "-",
            ago(run.submitted_at),
            status_text(run.status, reason),
            run.tag or "",
        )
        if len(run.jobs) > 1:
            for job in run.jobs:
                t.add_row("", f"  {job_label(job)}", "", status_text(job.status, job.reason), "")
    return t
