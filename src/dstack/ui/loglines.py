"""A job's log as numbered lines, for the log viewer: a line index over the log's rows.

Rows (`LogRow`) are chunks of output, several lines each, the last maybe partial (continued
by the next row). The viewer pages by line number, so each job gets an index: per row, its
seq and the number of the line it starts in (the newlines of all rows before it), counted by
the database (`length(data) - length(replace(data, '\\n', ''))`) without reading the text.
The index grows with the log (only rows after the last indexed seq are counted) and is kept
for a few jobs (`LogIndexes`), 16 bytes per row.

The viewer shows some of the streams (stdout, stderr, and the runner's own messages): an index
counts only their rows, so lines are numbered within what is shown (with one stream shown, a
partial stdout line goes on in the next stdout row, whatever stderr printed between them).
"""

from __future__ import annotations

import asyncio
import bisect
from array import array
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, select

from dstack.server.context import ServerContext
from dstack.server.db.models import LogRow
from dstack.server.errors import InvalidRequestError
from dstack.ui import ansi

STREAMS = ("stdout", "stderr", "runner")
MAX_PAGE_LINES = 2000
MAX_MATCHES = 10_000
_NEWLINES = func.length(LogRow.data) - func.length(func.replace(LogRow.data, "\n", ""))
_COUNTS = (
    select(LogRow.seq, _NEWLINES)
    .where(
        LogRow.job_id == bindparam("job_id"),
        LogRow.seq > bindparam("after"),
        LogRow.stream.in_(bindparam("streams", expanding=True)),
    )
    .order_by(LogRow.seq)
)
_ROWS_FROM = (
    select(LogRow.seq, LogRow.stream, LogRow.data, LogRow.timestamp)
    .where(
        LogRow.job_id == bindparam("job_id"),
        LogRow.seq >= bindparam("first"),
        LogRow.stream.in_(bindparam("streams", expanding=True)),
    )
    .order_by(LogRow.seq)
    .limit(bindparam("limit"))
)
_LAST_DATA = select(LogRow.data).where(
    LogRow.job_id == bindparam("job_id"), LogRow.seq == bindparam("seq")
)


@dataclass
class LogIndex:
    seqs: array[int] = field(default_factory=lambda: array("q"))
    starts: array[int] = field(default_factory=lambda: array("q"))
    newlines: int = 0  # in all indexed rows
    partial: bool = False  # the last row does not end a line
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def last_seq(self) -> int:
        return self.seqs[-1] if self.seqs else -1

    @property
    def lines(self) -> int:
        return self.newlines + (1 if self.partial else 0)

    def line_of(self, seq: int) -> int:
        """The line the row `seq` starts in."""
        i = bisect.bisect_right(self.seqs, seq) - 1
        return self.starts[i] if i >= 0 else 0


@dataclass
class Line:
    number: int
    stream: str
    text: str
    at: datetime | None = None  # when its first text was printed

    def json(self) -> dict[str, Any]:
        at = self.at.isoformat() if self.at is not None else None
        return {"n": self.number, "s": self.stream, "t": at, "h": ansi.to_html(self.text)}


def parse_streams(value: str | None) -> tuple[str, ...]:
    """`stdout,stderr` (any of `STREAMS`, comma-separated) as a key; None: all of them."""
    if value is None:
        return STREAMS
    chosen = set(value.split(","))
    if not chosen or not chosen <= set(STREAMS):
        raise InvalidRequestError(
            f"unknown streams '{value[:100]}'",
            hint="a comma-separated list of " + ",".join(STREAMS),
        )
    return tuple(s for s in STREAMS if s in chosen)


class LogIndexes:
    """The line indexes of the last few (job, streams) looked at."""

    def __init__(self, size: int = 32) -> None:
        self._size = size
        self._indexes: OrderedDict[tuple[str, tuple[str, ...]], LogIndex] = OrderedDict()

    async def of(
        self, ctx: ServerContext, job_id: str, streams: tuple[str, ...] = STREAMS
    ) -> LogIndex:
        key = (job_id, streams)
        index = self._indexes.get(key)
        if index is None:
            index = self._indexes[key] = LogIndex()
            while len(self._indexes) > self._size:
                self._indexes.popitem(last=False)
        self._indexes.move_to_end(key)
        async with index.lock:
            await _extend(ctx, job_id, streams, index)
        return index


async def _extend(
    ctx: ServerContext, job_id: str, streams: tuple[str, ...], index: LogIndex
) -> None:
    params = {"job_id": job_id, "after": index.last_seq, "streams": list(streams)}
    async with ctx.connect() as connection:
        rows = (await connection.execute(_COUNTS, params)).all()
        if not rows:
            return
        for seq, newlines in rows:
            index.seqs.append(seq)
            index.starts.append(index.newlines)
            index.newlines += int(newlines or 0)
        last = await connection.scalar(_LAST_DATA, {"job_id": job_id, "seq": index.last_seq})
    index.partial = bool(last) and not str(last).endswith("\n")


async def read_lines(
    ctx: ServerContext,
    job_id: str,
    index: LogIndex,
    start: int,
    count: int,
    streams: tuple[str, ...] = STREAMS,
) -> list[Line]:
    """Lines `start` .. `start + count` (fewer at the end of the log)."""
    start = max(0, min(start, index.lines))
    count = max(0, min(count, MAX_PAGE_LINES, index.lines - start))
    if not count:
        return []
    # The row holding the newline that ends line start-1: line `start` begins after it.
    i = max(0, bisect.bisect_left(index.starts, start) - 1) if start else 0
    number = index.starts[i]
    lines: list[Line] = []
    current: list[str] = []
    stream: str | None = None
    at: datetime | None = None
    first = index.seqs[i]
    async with ctx.connect() as connection:
        while len(lines) < count:
            rows = (
                await connection.execute(
                    _ROWS_FROM,
                    {"job_id": job_id, "first": first, "limit": 64, "streams": list(streams)},
                )
            ).all()
            if not rows:
                break
            for seq, row_stream, data, row_at in rows:
                first = seq + 1
                parts = data.split("\n")
                for k, part in enumerate(parts):
                    if stream is None and (part or k < len(parts) - 1):
                        stream = row_stream  # a line's stream: where its first text is
                        at = row_at
                    current.append(part)
                    if k == len(parts) - 1:
                        break  # the row's last part goes on in the next row
                    if number >= start:
                        lines.append(Line(number, stream or row_stream, "".join(current), at))
                    number += 1
                    current, stream, at = [], None, None
                    if len(lines) >= count:
                        break
                if len(lines) >= count:
                    break
    if len(lines) < count and current and number >= start and "".join(current):
        lines.append(Line(number, stream or "stdout", "".join(current), at))
    return lines


async def search(
    ctx: ServerContext,
    job_id: str,
    index: LogIndex,
    query: str,
    streams: tuple[str, ...] = STREAMS,
) -> tuple[list[int], bool]:
    """The numbers of the lines that contain `query` (case-insensitive, colours ignored),
    at most `MAX_MATCHES`; and whether there were more."""
    needle = query.lower()
    matches: list[int] = []
    statement = (
        select(LogRow.seq, LogRow.data)
        .where(
            LogRow.job_id == job_id,
            LogRow.stream.in_(streams),
            LogRow.data.icontains(query, autoescape=True),
        )
        .order_by(LogRow.seq)
        .limit(MAX_MATCHES)  # each row found holds a match
    )
    async with ctx.connect() as connection:
        rows = (await connection.execute(statement)).all()
    for seq, data in rows:
        if seq > index.last_seq:
            break
        base = index.line_of(seq)
        for k, part in enumerate(data.split("\n")):
            if needle in ansi.strip(part).lower() and (not matches or matches[-1] != base + k):
                matches.append(base + k)
                if len(matches) >= MAX_MATCHES:
                    return matches, True
    return matches, False


HAS_STREAM = (
    select(LogRow.seq)
    .where(LogRow.job_id == bindparam("job_id"), LogRow.stream == bindparam("stream"))
    .limit(1)
)
ROWS_AFTER = (
    select(LogRow.seq, LogRow.data)
    .where(LogRow.job_id == bindparam("job_id"), LogRow.seq > bindparam("after"))
    .order_by(LogRow.seq)
    .limit(bindparam("limit"))
)
