"""Byte counts as dstack shows them, everywhere (CLI, runner messages, the server's
messages): IEC units, powers of 1024 named so — `512 B`, `1.5 KiB`, `286.1 MiB`, `16 GiB`.

Sizes written in a configuration or an option (`16GB`, `512MB`) are read as powers of 1024
too (`dstack.models.resources.parse_memory_mib`), so what is shown matches what was asked for.
"""

from __future__ import annotations

_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")


def format_bytes(count: int) -> str:
    """`512 B`, `1.5 KiB`, `12.0 MiB`, `1.2 GiB` (one decimal above a KiB)."""
    if count < 1024:
        return f"{count} B"
    value = float(count)
    for unit in _UNITS:
        value /= 1024
        if value < 1024 or unit == _UNITS[-1]:
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def format_mib(mib: int) -> str:
    """A size given in MiB (memory, disk): `512 MiB`, `16 GiB`, `1.5 GiB`; whole numbers
    without a decimal, as they are usually asked for."""
    if mib < 1024:
        return f"{mib} MiB"
    gib = mib / 1024
    return f"{mib // 1024} GiB" if mib % 1024 == 0 else f"{gib:.1f} GiB"
