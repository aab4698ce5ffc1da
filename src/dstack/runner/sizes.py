"""Byte counts as people read them in a job's log."""

from __future__ import annotations

_UNITS = ("KB", "MB", "GB", "TB")


def format_size(size: int) -> str:
    """`532 B`, `1.2 KB`, `1.2 GB` (powers of 1000, like `ls -h --si`)."""
    if size < 1000:
        return f"{size} B"
    value = float(size)
    for unit in _UNITS:
        value /= 1000
        if value < 1000 or unit == _UNITS[-1]:
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")
