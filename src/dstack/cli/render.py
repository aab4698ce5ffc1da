"""Rendering shared by the commands: consoles, tables, times, statuses."""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import ProgressColumn
    from rich.table import Table

    from dstack.models.job import Job, JobStatus
    from dstack.models.run import Run

    # The cells before STATUS, the status and its reason, the cells after it
    _RunRow = tuple[list[str], JobStatus, object, list[str]]

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
    # rich (about 40 ms) is imported by the first table or console: `--json` and the plain
    # output of `print_runs` never load it.
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def table(*columns: str) -> Table:
    from rich.table import Table  # see `console`

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
    """`512 B`, `1.5 KiB`, `12.0 MiB` (`dstack.models.sizes`: IEC units everywhere)."""
    # sizes: only listings that show one
    from dstack.models.sizes import format_bytes

    return "-" if n is None else format_bytes(n)


def transfer_columns() -> tuple[ProgressColumn, ProgressColumn]:
    """rich progress columns for a transfer, in dstack's units (`12.0/286.1 MiB`,
    `3.2 MiB/s`): rich's own speed column writes decimal `MB/s`."""
    # rich.progress: ~35 ms only transfers with a progress bar need
    from rich.progress import DownloadColumn, ProgressColumn, Task
    from rich.text import Text

    class SpeedColumn(ProgressColumn):
        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            shown = "?" if speed is None else f"{size(int(speed))}/s"
            return Text(shown, style="progress.data.speed")

    return DownloadColumn(binary_units=True), SpeedColumn()


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


# Environment variables that make rich style or size its output differently.
_RICH_ENV = ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS", "JUPYTER_COLUMNS")
_PLAIN_WIDTH = 80  # rich's width when writing to something that is not a terminal


def print_runs(runs: list[Run], *, stderr: bool = False) -> None:
    """Print `runs_table(runs)`. Where rich would write plain text anyway (not a terminal,
    nothing rich would reinterpret or wrap), the same text is written without importing
    rich, which would cost a short command a good share of its run time."""
    stream = sys.stderr if stderr else sys.stdout
    text = plain_runs_table(runs, stream)
    if text is None:
        console(stderr=stderr).print(runs_table(runs))
    else:
        stream.write(text)
        stream.flush()


def plain_runs_table(runs: list[Run], stream: TextIO) -> str | None:
    """The text rich renders for `runs_table(runs)` on `stream`, or None when only rich can
    tell (a terminal, colour forced, a set width, or cells with markup, emoji codes or
    characters of other widths)."""
    if stream.isatty() or any(os.environ.get(name) for name in _RICH_ENV):
        return None
    columns = run_columns(runs)
    rows = [columns] + [
        [*before, status_plain(status, reason), *after]
        for before, status, reason, after in _run_rows(runs)
    ]
    if not all(_plain_cell(cell) for row in rows for cell in row):
        return None
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    if sum(widths) + 2 * (len(widths) - 1) > _PLAIN_WIDTH:
        return None
    return "".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) + "\n"
        for row in rows
    )


def run_columns(runs: list[Run]) -> list[str]:
    """RUN, [REPO,] [USER,] WORKFLOW, SUBMITTED, STATUS, TAG, COST: REPO and USER where the
    runs are of more than one repository or user."""
    repos, users = _scope_columns(runs)
    return [
        "RUN",
        *(["REPO"] if repos else []),
        *(["USER"] if users else []),
        "WORKFLOW",
        "SUBMITTED",
        "STATUS",
        "TAG",
        "COST",
    ]


def _scope_columns(runs: list[Run]) -> tuple[dict[str, str], bool]:
    """The REPO cell of each repository id (none when all runs share one: its short form, or
    the whole id where two share that), and whether USER is shown."""
    ids = {run.repo.repo_id for run in runs}
    users = len({run.user for run in runs}) > 1
    if len(ids) < 2:
        return {}, users
    short = {repo_id: _short_repo(repo_id) for repo_id in ids}
    if len(set(short.values())) < len(short):
        return {repo_id: repo_id for repo_id in ids}, users
    return short, users


def _plain_cell(cell: str) -> bool:
    return cell.isascii() and cell.isprintable() and not any(c in cell for c in "[]:\\")


def _short_repo(repo_id: str) -> str:
    """`github.com/acme/models` → `models`; `local:` + a path hash → its first 8 digits."""
    if repo_id.startswith("local:"):
        return repo_id[: len("local:") + 8]
    return repo_id.rstrip("/").rsplit("/", 1)[-1] or repo_id


def _run_rows(runs: list[Run]) -> list[_RunRow]:
    """Per run, and per job of a multi-job run: the cells, with the status and its reason."""
    repos, users = _scope_columns(runs)
    rows: list[_RunRow] = []
    for run in runs:
        reason = run.jobs[-1].reason if len(run.jobs) == 1 else None
        workflow = run.workflow_name or run.provider or "-"
        scope = [*([repos[run.repo.repo_id]] if repos else []), *([run.user] if users else [])]
        rows.append(
            (
                [run.name, *scope, workflow, ago(run.submitted_at)],
                run.status,
                reason,
                [run.tag or "", cost(run.cost)],
            )
        )
        if len(run.jobs) > 1:
            blank = [""] * len(scope)
            rows += [
                (["", *blank, f"  {job_label(j)}", ""], j.status, j.reason, ["", ""])
                for j in run.jobs
            ]
    return rows


def cost(usd: float | None) -> str:
    """`$1.25`, `$0.0031` (below a cent), `-` for no cloud runner."""
    if usd is None:
        return "-"
    return f"${usd:.2f}" if usd >= 0.01 or usd == 0 else f"${usd:.4f}"


def price(usd_per_hour: float) -> str:
    return f"${usd_per_hour:.2f}/h" if usd_per_hour >= 0.1 else f"${usd_per_hour:.3f}/h"


def runs_table(runs: list[Run]) -> Table:
    """`run_columns(runs)`; multi-job runs get one indented row per job."""
    t = table(*run_columns(runs))
    for before, status, reason, after in _run_rows(runs):
        t.add_row(*before, status_text(status, reason), *after)
    return t
