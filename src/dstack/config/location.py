"""Where a value was written, so every error can start with ``file:line``."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from dstack.errors import ConfigError
from dstack.models.workflow import SourceLocation


@dataclass(frozen=True)
class Where:
    """A workflow (or file section) being read: builds `ConfigError`s that say where."""

    file: str
    line: int | None = None
    workflow: str | None = None

    @property
    def source(self) -> SourceLocation:
        return SourceLocation(file=self.file, line=self.line)

    def at(self, line: int | None) -> Where:
        return Where(self.file, line or self.line, self.workflow)

    def error(self, message: str, hint: str | None = None) -> ConfigError:
        """``.dstack/workflows.yaml:14: workflow 'train': <message>``."""
        prefix = f"{self.file}:{self.line}" if self.line else self.file
        if self.workflow is not None:
            prefix += f": workflow '{self.workflow}'"
        return ConfigError(f"{prefix}: {message}", hint=hint)


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """``did you mean 'artifacts'?`` for the closest candidate (case-insensitive), or None."""
    by_lower = {c.lower(): c for c in candidates}
    matches = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.6)
    return f"did you mean '{by_lower[matches[0]]}'?" if matches else None


def close_matches(word: str, candidates: Iterable[str]) -> list[str]:
    """Up to three candidates close to ``word``."""
    return difflib.get_close_matches(word, list(candidates), n=3, cutoff=0.5)


def show(value: Any, limit: int = 40) -> str:
    """A short rendering of a user's value for an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
