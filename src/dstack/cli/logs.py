"""`dstack logs RUN [-f] [-t] [--runner] [--since 10m|ISO-TIME] [--json]`"""

from __future__ import annotations

import re
import sys
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import click

from dstack.cli.context import client_for, remote_option
from dstack.cli.follow import (
    LogView,
    RunFollower,
    reconnect_for,
    reconnect_option,
    shown_events,
    write_events,
)
from dstack.errors import ConfigError

if TYPE_CHECKING:
    from dstack.api.client import Client
    from dstack.models.run import Run

_RELATIVE = re.compile(r"^(\d+)\s*([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """`10m`, `2h`, `30s`, `1d`, or an ISO-8601 time (local time when it has no zone)."""
    match = _RELATIVE.match(value.strip())
    if match:
        amount, unit = match.groups()
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[unit]: int(amount)})
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            f"--since '{value}' is not a duration or a time",
            hint="use e.g. 10m, 2h, 1d or 2026-11-22T10:00",
        ) from None
    return when if when.tzinfo else when.astimezone()


@click.command()
@remote_option
@click.argument("run_name", metavar="RUN")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until the run ends.")
@click.option("--since", metavar="WHEN", help="Only lines since: 10m, 2h or an ISO time.")
@click.option(
    "-t", "--timestamps", is_flag=True, help="Start each line with its time (UTC, ISO 8601)."
)
@click.option(
    "--runner",
    "show_runner",
    is_flag=True,
    help="Also the runner's own messages (artifact uploads, image pulls), on stderr.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="One JSON object per chunk of output (job, seq, timestamp, stream, data).",
)
@reconnect_option
def logs(
    run_name: str,
    follow: bool,
    since: str | None,
    timestamps: bool,
    show_runner: bool,
    as_json: bool,
    remote: str | None,
    reconnect_timeout: float,
) -> None:
    """Show the output of a run (stdout to stdout, stderr to stderr). In a run of several
    jobs each line starts with its job's name (`[prepare] `) and node (`[node 1] `).

    With -f, a server that goes away is waited for (see --reconnect-timeout)."""
    client = client_for(remote)
    since_time = parse_since(since) if since else None
    if follow:
        reconnect = reconnect_for(client, run_name, remote=remote, give_up_after=reconnect_timeout)
        RunFollower(
            client,
            run_name,
            show_status=False,
            since=since_time,
            as_json=as_json,
            reconnect=reconnect,
            timestamps=timestamps,
            runner=show_runner,
        ).follow()
        return
    printed = _print_pages(client, run_name, since_time, timestamps, show_runner, as_json)
    if not printed and not as_json and since_time is None:
        _say_reused(client.get_run(run_name))


def _print_pages(
    client: Client,
    run_name: str,
    since: datetime | None,
    timestamps: bool,
    runner: bool,
    as_json: bool,
) -> int:
    """Print the run's logs page by page; the number of events printed."""
    cursor: str | None = None
    view: LogView | None = None
    printed = 0
    while True:
        page = client.get_logs(run_name, cursor=cursor, since=since, wait=0)
        events = page.events
        if events and as_json:
            events = shown_events(events, runner=runner)
        elif events:
            run = page.run or client.get_run(run_name)
            view = view or LogView(run, timestamps=timestamps, runner=runner)
            events = view(events)
        write_events(events, sys.stdout, sys.stderr, as_json)
        printed += len(events)
        if not page.events or page.cursor == cursor:
            return printed
        cursor = page.cursor


def _say_reused(run: Run) -> None:
    """A run with no output of its own because its jobs reused earlier results says so, and
    whose output that was."""
    reused = [job for job in run.jobs if job.reused_from]
    if not reused or len(reused) < len(run.jobs):
        return
    origins = sorted({job.reused_from for job in reused if job.reused_from})
    runs = f"run {origins[0]}" if len(origins) == 1 else f"runs {', '.join(origins)}"
    click.echo(
        f"{run.name} has no output: every job reused the results of {runs}"
        f" (cached; `dstack logs {origins[0]}` shows the output that made them)",
        err=True,
    )
