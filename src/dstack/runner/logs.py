"""A job's output: spooled to disk first, then shipped to the server in ordered batches.

`LogSpool` appends one JSON record per chunk of output to `spool.jsonl`:
``[seq, timestamp, stream, text]``. A chunk is what the job wrote in one go (several lines,
possibly ending in a partial one), cut at line ends into entries of at most `MAX_ENTRY`
characters: output stays byte-exact and ordered, and a million lines become a few hundred
records, batches and rows instead of a million of each.

`LogShipper` reads the spool from the last shipped offset and posts batches; after each
accepted batch it records ``seq offset`` in `shipped`, so a restarted runner resumes there.
Resending is harmless (the server ignores seen seqs), which is why the marker is written
without fsync. Secret values are masked before anything reaches the disk.

A full disk never stops the job's output from being read (a job whose pipe is closed dies
of SIGPIPE): output that cannot be written is held in memory, at most `HOLD_CHARS`, the
oldest dropped first and counted in `lost`. Each later write tries the disk again; once it
takes records again, a line saying how much was lost and where comes first, then what was
held. The spool keeps `RESERVE_BYTES` of disk from its start, given up at `close` when the
disk is full or nearly so, so that the notice and the held tail of a job that filled the disk
still reach its log. Otherwise the reserve stays in the spool's folder and goes with it
(`discard_reserve` where the folder is kept): unlinking a megabyte of allocated blocks costs
a millisecond, on the way from a job's end to its final status.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from dstack.errors import ConflictError, DstackError, NotFoundError
from dstack.models.logs import LogStream
from dstack.models.protocol import LogLine

log = logging.getLogger(__name__)

SPOOL_FILE = "spool.jsonl"
MARKER_FILE = "shipped"
RESERVE_FILE = "reserve"
RESERVE_BYTES = 1 << 20
"""Disk kept by each spool for its last words on a full disk (see the module's docstring)."""
LOW_SPACE_BYTES = 64 << 20
"""Free space under which a closing spool gives up its reserve even when all its writes
succeeded: the runner's next writes (the next job's records and spool) may need it."""
HOLD_CHARS = 1 << 17
"""Characters of output held in memory while the spool's disk is full."""
MASK = "***"
# Characters per log entry; a longer chunk is cut after its last newline within the limit.
MAX_ENTRY = 1 << 16
_STREAM_CODES = {LogStream.STDOUT: "o", LogStream.STDERR: "e", LogStream.RUNNER: "r"}
_CODE_STREAMS = {code: stream for stream, code in _STREAM_CODES.items()}

SendBatch = Callable[[list[LogLine]], None]


class SecretMasker:
    """Replaces every secret value with `***`; longest first so overlapping values mask fully."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._values = sorted({s for s in secrets if s}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, MASK)
        return text

    def unsafe_tail(self, text: str) -> int:
        """Length of the longest end of `text`'s last line that begins a secret value: the
        rest of the value may come in the next chunk, so that end must wait for it."""
        line = text[text.rfind("\n") + 1 :]
        longest = 0
        for value in self._values:
            for size in range(min(len(value) - 1, len(line)), longest, -1):
                if line.endswith(value[:size]):
                    longest = size
                    break
        return longest


class LogSpool:
    """Append-only spool of one job's output. Thread-safe; `write` never blocks on the network.

    Reopening an existing spool continues its sequence, so a restarted runner appends after
    the lines it already has.
    """

    def __init__(self, directory: Path, *, secrets: Iterable[str] = ()) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.path = directory / SPOOL_FILE
        self._mask = SecretMasker(secrets)
        self._cond = threading.Condition()
        self._decoders = {
            stream: codecs.getincrementaldecoder("utf-8")(errors="replace") for stream in LogStream
        }
        # Per stream, output held back because it may be the start of a secret value.
        self._held = dict.fromkeys(LogStream, "")
        self._next_seq, self._size = _recover(self.path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self._closed = False
        self._written: Callable[[], None] | None = None
        self._reserve = _reserve(directory / RESERVE_FILE)
        # Output that could not be written yet (the disk is full), oldest first.
        self._holding: deque[tuple[LogStream, str]] = deque()
        self._held_chars = 0
        self._unsaid = 0  # bytes dropped that no notice in the spool tells of yet
        self.lost = 0
        """Bytes of the job's output dropped because the disk stayed full."""
        self.write_error: OSError | None = None
        """The first error writing the spool met (ENOSPC: the disk is full)."""

    @property
    def next_seq(self) -> int:
        return self._next_seq

    @property
    def size(self) -> int:
        """Bytes of complete records written so far."""
        return self._size

    @property
    def closed(self) -> bool:
        return self._closed

    def write(self, stream: LogStream, data: bytes) -> None:
        """Record output of the job. Split UTF-8 sequences are joined across calls, and so are
        secret values split across calls (the start of one waits for the next write)."""
        with self._cond:
            if self._closed:
                return
            text = self._held[stream] + self._decoders[stream].decode(data)
            keep = self._mask.unsafe_tail(text)
            self._held[stream] = text[len(text) - keep :] if keep else ""
            self._append(stream, text[: len(text) - keep])

    def write_line(self, text: str, stream: LogStream = LogStream.RUNNER) -> None:
        """Record a message of the runner itself (pull progress, an upload's summary) as one
        line, on the runner's stream; one that tells why the job failed goes on `stderr`,
        where it is shown with the job's output (`say_error`)."""
        with self._cond:
            if not self._closed:
                self._append(stream, self._held[stream])
                self._held[stream] = ""
                self._append(stream, text if text.endswith("\n") else text + "\n")

    def say_error(self, text: str) -> None:
        """A line of the runner the user must see with the job's output: why it failed."""
        self.write_line(text, LogStream.STDERR)

    def close(self) -> None:
        """Flush what the decoders hold and refuse further writes; the reserve is given up
        when the disk is short of space (see the module's docstring). Idempotent."""
        with self._cond:
            if self._closed:
                return
            for stream, decoder in self._decoders.items():
                self._append(stream, self._held[stream] + decoder.decode(b"", final=True))
            if self._short_of_space():
                self.discard_reserve()
            if self._holding or self._unsaid:
                self._flush_holding()
            self._drop(self._held_chars)  # the disk stayed full even so
            self._closed = True
            os.close(self._fd)
            self._cond.notify_all()

    def when_written(self, callback: Callable[[], None]) -> None:
        """Call `callback` once, when the spool holds a record (now, if it does already)."""
        with self._cond:
            if not self._size:
                self._written = callback
                return
        callback()

    def wait_for_data(self, offset: int, timeout: float) -> None:
        """Block until the spool grows past `offset`, is closed, or `timeout` passes."""
        with self._cond:
            if self._size <= offset and not self._closed:
                self._cond.wait(timeout)

    def _append(self, stream: LogStream, text: str) -> None:
        if not text:
            return
        # Masked as a whole, before cutting, so a cut never splits a secret value.
        masked = self._mask(text)
        if self._holding or self._unsaid:
            self._flush_holding()
        if self._holding or self._unsaid:
            self._hold(stream, masked)
            return
        rest = self._write_text(stream, masked)
        if rest:
            self._hold(stream, rest)

    def _write_text(self, stream: LogStream, text: str) -> str:
        """Write `text` as records; returns what did not fit on the disk ('' when all did)."""
        timestamp = datetime.now(UTC).isoformat()
        code = _STREAM_CODES[stream]
        pieces = _split_entries(text, MAX_ENTRY)
        for index, piece in enumerate(pieces):
            record = json.dumps([self._next_seq, timestamp, code, piece]) + "\n"
            if not self._write_record(record.encode()):
                return "".join(pieces[index:])
            self._next_seq += 1
        return ""

    def _write_record(self, payload: bytes) -> bool:
        """Append one whole record, or nothing (a torn one is cut off): False on an error."""
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            if self.write_error is None:
                self.write_error = exc
                log.warning("cannot write the log spool %s: %s", self.path, exc)
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
            return False
        self._size += len(payload)
        self._cond.notify_all()
        if self._written is not None:
            written, self._written = self._written, None
            written()
        return True

    def _hold(self, stream: LogStream, text: str) -> None:
        """Keep `text` for later, dropping the oldest held output past `HOLD_CHARS`."""
        self._holding.append((stream, text))
        self._held_chars += len(text)
        self._drop(self._held_chars - HOLD_CHARS)

    def _drop(self, chars: int) -> None:
        """Drop the oldest `chars` characters held, counting their bytes as lost."""
        while chars > 0 and self._holding:
            stream, text = self._holding[0]
            cut = min(chars, len(text))
            dropped = len(text[:cut].encode(errors="replace"))
            self.lost += dropped
            self._unsaid += dropped
            self._held_chars -= cut
            chars -= cut
            if cut == len(text):
                self._holding.popleft()
            else:
                self._holding[0] = (stream, text[cut:])

    def _flush_holding(self) -> None:
        """Write the notice of what was lost, then what was held, while the disk takes it."""
        if self._unsaid:
            notice = (
                f"[dstack] {self._unsaid} bytes of output were lost here: cannot write "
                f"{self.path}: {_strerror(self.write_error)}\n"
            )
            if self._write_text(LogStream.STDERR, notice):
                return
            self._unsaid = 0
        while self._holding:
            stream, text = self._holding[0]
            rest = self._write_text(stream, text)
            self._held_chars -= len(text) - len(rest)
            if rest:
                self._holding[0] = (stream, rest)
                return
            self._holding.popleft()

    def discard_reserve(self) -> None:
        """Give the reserve's disk back now (`close` does when the disk is short of it)."""
        if self._reserve is not None:
            with contextlib.suppress(OSError):
                self._reserve.unlink()
            self._reserve = None

    def _short_of_space(self) -> bool:
        """Whether a write failed or waits for the disk, or the disk has little left."""
        if self.write_error is not None or self._holding or self._unsaid:
            return True
        try:
            stats = os.statvfs(self.directory)
        except OSError:
            return True
        return stats.f_bavail * stats.f_frsize < LOW_SPACE_BYTES


class LogShipper:
    """Ships a spool to the server on a thread, in order, in batches, as soon as lines arrive.

    `send` failing with a `DstackError` is retried with backoff from the same line; a
    `ConflictError`/`NotFoundError` (the job is no longer this runner's) ends shipping.
    """

    def __init__(
        self,
        spool: LogSpool,
        send: SendBatch,
        *,
        max_lines: int = 1000,
        max_bytes: int = 3 << 20,  # of spool records: the JSON body stays under the server's 4 MiB
        backoff: float = 0.2,
        backoff_max: float = 5.0,
    ) -> None:
        self._spool = spool
        self._send = send
        self._max_lines = max_lines
        self._max_bytes = max_bytes
        self._backoff = backoff
        self._backoff_max = backoff_max
        self._marker = spool.directory / MARKER_FILE
        self._offset = _read_marker(self._marker)
        self._abandoned = threading.Event()
        self._done = threading.Event()
        self.rejected: DstackError | None = None
        self._thread = threading.Thread(target=self._run, name="log-shipper", daemon=True)

    @property
    def shipped_offset(self) -> int:
        return self._offset

    def start(self) -> LogShipper:
        """Ship from now on. The thread starts with the spool's first record (at once when it
        has records already): a job that prints nothing costs no thread."""
        self._spool.when_written(self._thread.start)
        return self

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until the spool is closed and every line was accepted (or shipping ended).

        Returns False when `timeout` passed first. Closing the spool is the caller's job.
        """
        spool = self._spool
        if spool.closed and self._offset >= spool.size:  # all accepted: no wait for the thread
            return True
        return self._done.wait(timeout)

    def flush(self, timeout: float) -> bool:
        """Wait until every line written so far was accepted (or shipping ended); False
        when `timeout` passed first."""
        target = self._spool.size
        deadline = time.monotonic() + timeout
        while self._offset < target and not self._done.is_set():
            if time.monotonic() >= deadline:
                return False
            self._done.wait(0.05)
        return True

    def abandon(self) -> None:
        """Stop shipping now; what was not shipped stays in the spool for a later shipper."""
        self._abandoned.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        try:
            with self._spool.path.open("rb") as source:
                self._ship_from(source)
        finally:
            self._done.set()

    def _ship_from(self, source: BinaryIO) -> None:
        pause = self._backoff
        while not self._abandoned.is_set():
            source.seek(self._offset)
            lines, end = self._read_batch(source)
            if not lines:
                if self._spool.closed and self._offset >= self._spool.size:
                    return
                self._spool.wait_for_data(self._offset, timeout=0.5)
                continue
            try:
                self._send(lines)
            except (ConflictError, NotFoundError) as exc:
                self.rejected = exc
                return
            except DstackError as exc:
                log.warning("shipping logs failed, retrying in %.1fs: %s", pause, exc)
                self._abandoned.wait(pause)
                pause = min(pause * 2, self._backoff_max)
                continue
            pause = self._backoff
            self._offset = end
            try:
                _write_marker(self._marker, lines[-1].seq + 1, end)
            except OSError as exc:  # a full disk: a later marker, or a resend, makes up for it
                log.warning("cannot record shipped logs in %s: %s", self._marker, exc)

    def _read_batch(self, source: BinaryIO) -> tuple[list[LogLine], int]:
        lines: list[LogLine] = []
        offset = self._offset
        size = 0
        while len(lines) < self._max_lines and size < self._max_bytes:
            raw = source.readline()
            if not raw.endswith(b"\n"):
                break  # nothing more, or a record still being written
            offset += len(raw)
            size += len(raw)
            lines.append(_parse_record(raw))
        return lines, offset


def _parse_record(raw: bytes) -> LogLine:
    seq, timestamp, code, data = json.loads(raw)
    # Records were validated when written; skipping validation keeps 1M lines in seconds.
    return LogLine.model_construct(
        seq=seq,
        timestamp=datetime.fromisoformat(timestamp),
        stream=_CODE_STREAMS[code],
        data=data,
    )


def _split_entries(text: str, limit: int) -> list[str]:
    """`text` in pieces of at most `limit` characters, each cut after a newline where the
    piece holds one (a longer line is cut where the limit falls)."""
    pieces = []
    start = 0
    while len(text) - start > limit:
        cut = text.rfind("\n", start, start + limit) + 1
        if cut <= start:
            cut = start + limit
        pieces.append(text[start:cut])
        start = cut
    if start < len(text):
        pieces.append(text[start:])
    return pieces


def _recover(path: Path) -> tuple[int, int]:
    """Next seq and size of an existing spool; a torn last record is cut off."""
    if not path.exists():
        return 0, 0
    with path.open("rb+") as spool:
        data = spool.read()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            spool.truncate(end)
    if end == 0:
        return 0, 0
    last = data[data.rfind(b"\n", 0, end - 1) + 1 : end]
    return int(json.loads(last)[0]) + 1, end


def _reserve(path: Path) -> Path | None:
    """Take `RESERVE_BYTES` of disk at `path`; None when the disk has not even that."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    except OSError:
        return None
    try:
        os.posix_fallocate(fd, 0, RESERVE_BYTES)
    except OSError:
        os.close(fd)
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    os.close(fd)
    return path


def _strerror(exc: OSError | None) -> str:
    if exc is None:
        return "unknown error"
    return exc.strerror or str(exc)


def _read_marker(path: Path) -> int:
    try:
        return int(path.read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def _write_marker(path: Path, next_seq: int, offset: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{next_seq} {offset}\n")
    os.replace(tmp, path)
