from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dstack.cli.logs import parse_since
from dstack.errors import ConfigError

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "delta"),
    [
        ("10m", timedelta(minutes=10)),
        ("2h", timedelta(hours=2)),
        ("30s", timedelta(seconds=30)),
        ("1d", timedelta(days=1)),
    ],
)
def test_relative_durations(text: str, delta: timedelta) -> None:
    assert parse_since(text, now=NOW) == NOW - delta


def test_iso_time_with_zone() -> None:
    assert parse_since("2026-11-22T10:00:00+00:00") == datetime(2026, 11, 22, 10, tzinfo=UTC)


def test_iso_time_without_zone_is_local_time() -> None:
    parsed = parse_since("2026-11-22T10:00:00")
    assert parsed.tzinfo is not None
    assert parsed.replace(tzinfo=None) == datetime(2026, 11, 22, 10)


def test_garbage_is_one_clear_error() -> None:
    with pytest.raises(ConfigError, match="--since 'soon' is not a duration or a time"):
        parse_since("soon")
