"""Byte counts as people read them in a job's log: `dstack.models.sizes`, the one unit
system (IEC: `1.5 KiB`, `12.0 MiB`) of every dstack output."""

from __future__ import annotations

from dstack.models.sizes import format_bytes as format_size

__all__ = ["format_size"]
