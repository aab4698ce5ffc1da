"""Errors of the runner that carry a job's termination reason."""

from __future__ import annotations

from dstack.errors import ExecutorError
from dstack.models.job import TerminationReason


class JobStartError(ExecutorError):
    """A job could not be started; `reason` is the termination reason to report."""

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        *,
        reason: TerminationReason = TerminationReason.EXECUTOR_ERROR,
    ) -> None:
        super().__init__(message, hint)
        self.reason = reason
