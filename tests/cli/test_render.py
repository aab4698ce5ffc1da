from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dstack.cli.render import ago, duration, status_plain
from dstack.models.job import JobStatus, TerminationReason

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def test_ago() -> None:
    assert ago(NOW - timedelta(seconds=1), NOW) == "just now"
    assert ago(NOW - timedelta(seconds=42), NOW) == "42 sec ago"
    assert ago(NOW - timedelta(minutes=5), NOW) == "5 min ago"
    assert ago(NOW - timedelta(hours=1), NOW) == "1 hour ago"
    assert ago(NOW - timedelta(hours=3), NOW) == "3 hours ago"
    assert ago(None, NOW) == "-"


def test_duration() -> None:
    assert duration(None) == "-"
    assert duration(1.25) == "1.2s"
    assert duration(125) == "2m05s"
    assert duration(3 * 3600 + 60) == "3h01m"


def test_status_shows_reason_only_when_it_tells_something() -> None:
    assert status_plain(JobStatus.DONE, TerminationReason.DONE) == "done"
    assert status_plain(JobStatus.FAILED, TerminationReason.EXIT_CODE) == "failed"
    assert (
        status_plain(JobStatus.FAILED, TerminationReason.DEPENDENCY_FAILED)
        == "failed (dependency failed)"
    )
    assert (
        status_plain(JobStatus.PENDING, TerminationReason.WAITING_FOR_RUNNER)
        == "pending (waiting for runner)"
    )
