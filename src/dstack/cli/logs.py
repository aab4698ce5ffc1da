"""`dstack logs RUN [-f] [--since 10m|ISO-TIME] [--json]`"""

from __future__ import annotations

import re
import sys
from datetime import UTC, datetime, timedelta

import click

from dstack.cli.context import client_for, remote_option
from dstack.cli.follow import (
    NodePrefixes,
    RunFollower,
    reconnect_for,
    reconnect_option,
    write_events,
)
from dstack.errors import ConfigError

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
    as_json: bool,
    remote: str | None,
    reconnect_timeout: float,
) -> None:
    """Show the output of a run (stdout to stdout, stderr to stderr).

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
        ).follow()
        return
    cursor: str | None = None
    prefixes: NodePrefixes | None = None
    while True:
        page = client.get_logs(run_name, cursor=cursor, since=since_time, wait=0)
        events = page.events
        if events and not as_json:  # `[node 1] ` before the lines of multi-node jobs
            prefixes = prefixes or NodePrefixes(page.run or client.get_run(run_name))
            events = prefixes(events)
        write_events(events, sys.stdout, sys.stderr, as_json)
        if not page.events or page.cursor == cursor:
            return
        cursor = page.cursor
