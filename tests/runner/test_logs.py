from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from dstack.errors import ServerError
from dstack.models.logs import LogStream
from dstack.models.protocol import LogLine
from dstack.runner import logs
from dstack.runner.logs import MAX_ENTRY, RESERVE_BYTES, LogShipper, LogSpool


class Sink:
    """Stands in for `POST /logs`: keeps lines by seq, can fail the next N calls."""

    def __init__(self, failures: int = 0) -> None:
        self.lines: dict[int, LogLine] = {}
        self.calls = 0
        self.failures = failures
        self.block = threading.Event()
        self.block.set()

    def __call__(self, lines: list[LogLine]) -> None:
        self.block.wait()
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise ServerError("server restarting")
        for line in lines:
            self.lines.setdefault(line.seq, line)

    def text(self) -> str:
        return "".join(self.lines[s].data for s in sorted(self.lines))


def test_lines_ship_in_order_with_streams_apart(tmp_path: Path) -> None:
    spool = LogSpool(tmp_path)
    sink = Sink()
    shipper = LogShipper(spool, sink).start()
    spool.write(LogStream.STDOUT, b"one\ntw")
    spool.write(LogStream.STDERR, b"oops\n")
    spool.write(LogStream.STDOUT, b"o\nthree\n")
    spool.close()
    assert shipper.drain(timeout=10)
    assert sorted(sink.lines) == list(range(len(sink.lines)))
    out = "".join(
        sink.lines[s].data for s in sorted(sink.lines) if sink.lines[s].stream == "stdout"
    )
    err = "".join(
        sink.lines[s].data for s in sorted(sink.lines) if sink.lines[s].stream == "stderr"
    )
    assert out == "one\ntwo\nthree\n"
    assert err == "oops\n"


def test_utf8_split_across_chunks_is_joined(tmp_path: Path) -> None:
    spool = LogSpool(tmp_path)
    sink = Sink()
    shipper = LogShipper(spool, sink).start()
    data = "héllo ✓\n".encode()
    for i in range(len(data)):
        spool.write(LogStream.STDOUT, data[i : i + 1])
    spool.close()
    assert shipper.drain(timeout=10)
    assert sink.text() == "héllo ✓\n"


def test_secrets_are_masked_before_reaching_disk(tmp_path: Path) -> None:
    spool = LogSpool(tmp_path, secrets=["s3cr3t-token", "pw"])
    sink = Sink()
    shipper = LogShipper(spool, sink).start()
    spool.write(LogStream.STDOUT, b"token=s3cr3t-token pass=pw\n")
    spool.close()
    assert shipper.drain(timeout=10)
    assert sink.text() == "token=*** pass=***\n"
    assert b"s3cr3t" not in (tmp_path / "spool.jsonl").read_bytes()


def test_nothing_is_lost_when_sending_fails_midway(tmp_path: Path) -> None:
    spool = LogSpool(tmp_path)
    sink = Sink(failures=3)
    shipper = LogShipper(spool, sink, max_lines=10, backoff=0.01).start()
    for i in range(100):
        spool.write(LogStream.STDOUT, f"line {i}\n".encode())
    spool.close()
    assert shipper.drain(timeout=10)
    assert sink.text() == "".join(f"line {i}\n" for i in range(100))
    assert sink.calls >= 13  # 10 batches plus 3 failed tries


def test_a_restarted_runner_resumes_after_the_shipped_lines(tmp_path: Path) -> None:
    spool = LogSpool(tmp_path)
    first = Sink()
    shipper = LogShipper(spool, first, max_lines=5).start()
    for i in range(10):
        spool.write(LogStream.STDOUT, f"a{i}\n".encode())
    while len(first.lines) < 10:
        shipper.drain(timeout=0.01)
    first.block.clear()  # the "server" hangs; then the runner dies
    spool.write(LogStream.STDOUT, b"late\n")
    # Reopen as a restarted runner would: the spool continues its seq, shipping resumes.
    spool2 = LogSpool(tmp_path)
    assert spool2.next_seq == 11
    spool2.write(LogStream.STDERR, b"after restart\n")
    spool2.close()
    second = Sink()
    assert LogShipper(spool2, second).start().drain(timeout=10)
    assert sorted(second.lines) == [10, 11]
    assert second.text() == "late\nafter restart\n"
    first.block.set()


def test_a_torn_last_record_is_dropped_on_reopen(tmp_path: Path) -> None:
    spool = LogSpool(tmp_path)
    spool.write(LogStream.STDOUT, b"kept\n")
    spool.close()
    with (tmp_path / "spool.jsonl").open("ab") as f:
        f.write(b'[1, "2024-01-01T00:00:00+00:00", "o", "tor')
    reopened = LogSpool(tmp_path)
    reopened.write(LogStream.STDOUT, b"next\n")
    reopened.close()
    records = [json.loads(x) for x in (tmp_path / "spool.jsonl").read_text().splitlines()]
    assert [(r[0], r[3]) for r in records] == [(0, "kept\n"), (1, "next\n")]


def test_a_million_lines_ship_as_few_entries_and_batches(tmp_path: Path) -> None:
    spool = LogSpool(tmp_path)
    received: list[LogLine] = []
    calls = 0

    def keep(lines: list[LogLine]) -> None:
        nonlocal calls
        received.extend(lines)
        calls += 1

    shipper = LogShipper(spool, keep).start()
    chunk = b"".join(b"%d\n" % i for i in range(10_000))
    for _ in range(100):
        spool.write(LogStream.STDOUT, chunk)
    spool.close()
    assert shipper.drain(timeout=120)
    text = "".join(line.data for line in received)
    assert text == chunk.decode() * 100
    assert [line.seq for line in received] == list(range(len(received)))
    assert len(received) <= 200  # one entry per write (cut at 64 KiB), not one per line
    assert calls <= 20


def test_a_long_write_is_cut_after_newlines(tmp_path: Path) -> None:
    spool = LogSpool(tmp_path)
    sink = Sink()
    shipper = LogShipper(spool, sink).start()
    text = "".join(f"{i:07d}\n" for i in range(20_000))  # 160,000 characters
    spool.write(LogStream.STDOUT, text.encode())
    spool.write(LogStream.STDOUT, b"x" * 70_000)  # one line longer than an entry
    spool.close()
    assert shipper.drain(timeout=10)
    entries = [sink.lines[s].data for s in sorted(sink.lines)]
    assert "".join(entries) == text + "x" * 70_000
    assert all(len(e) <= MAX_ENTRY for e in entries)
    assert all(e.endswith("\n") for e in entries[:3])  # the lines were cut at line ends
    assert len(entries) == 5


def test_a_secret_at_an_entry_cut_is_still_masked(tmp_path: Path) -> None:
    secret = "s3cr3t-token"
    spool = LogSpool(tmp_path, secrets=[secret])
    sink = Sink()
    shipper = LogShipper(spool, sink).start()
    # No newline near the cut: the value straddles the 64 KiB mark of one write...
    text = "a" * (MAX_ENTRY - 5) + secret + "b" * 10 + "\n"
    spool.write(LogStream.STDOUT, text.encode())
    # ...and here it is split across two reads of the job's output.
    spool.write(LogStream.STDOUT, b"then s3cr3t")
    spool.write(LogStream.STDOUT, b"-token again\n")
    spool.close()
    assert shipper.drain(timeout=10)
    expected = "a" * (MAX_ENTRY - 5) + "***" + "b" * 10 + "\nthen *** again\n"
    assert sink.text() == expected
    assert b"s3cr3t" not in (tmp_path / "spool.jsonl").read_bytes()


def _disk_used(folder: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in folder.rglob("*") if p.is_file())


def test_a_spool_closed_with_room_to_spare_keeps_its_reserve_until_discarded(
    tmp_path: Path,
) -> None:
    """Closing gives the reserve up only when the disk is short of it: unlinking it costs a
    job's end a millisecond; the reserve otherwise goes with the job's folder."""
    spool = LogSpool(tmp_path)
    spool.write(LogStream.STDOUT, b"done\n")
    spool.close()
    assert _disk_used(tmp_path) >= RESERVE_BYTES
    spool.discard_reserve()
    assert _disk_used(tmp_path) < RESERVE_BYTES
    assert [json.loads(r)[3] for r in (tmp_path / "spool.jsonl").read_text().splitlines()] == [
        "done\n"
    ]


def test_a_spool_closed_on_a_disk_short_of_space_gives_its_reserve_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = LogSpool(tmp_path)
    assert _disk_used(tmp_path) >= RESERVE_BYTES
    # Every disk is short of space when the threshold is above its size.
    monkeypatch.setattr(logs, "LOW_SPACE_BYTES", 1 << 62)
    spool.close()
    assert _disk_used(tmp_path) < RESERVE_BYTES


def test_a_job_that_prints_nothing_ships_nothing_and_its_shipper_ends_at_once(
    tmp_path: Path,
) -> None:
    spool = LogSpool(tmp_path / "silent")
    sink = Sink()
    shipper = LogShipper(spool, sink).start()
    spool.close()
    assert shipper.drain(timeout=0)
    shipper.abandon()
    assert sink.calls == 0
    # One that prints after a while: its lines ship as they come.
    spool = LogSpool(tmp_path / "late")
    shipper = LogShipper(spool, sink).start()
    spool.write(LogStream.STDOUT, b"late\n")
    spool.close()
    assert shipper.drain(timeout=10)
    assert sink.text() == "late\n"
