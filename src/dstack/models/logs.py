"""Job logs: ordered, byte-exact, timestamped lines."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from dstack.models.common import Model


class LogStream(StrEnum):
    """Where a chunk came from: the job's stdout or stderr, or the runner itself (`runner`:
    its own messages about the job, such as artifact uploads and image pulls, which the CLI
    shows only when asked, `--runner`)."""

    STDOUT = "stdout"
    STDERR = "stderr"
    RUNNER = "runner"


JOB_STREAMS = (LogStream.STDOUT, LogStream.STDERR)
"""The streams a job's own processes write."""


class LogEvent(Model):
    """A chunk of output. `seq` is the position in the job's log (from 0), unique per job."""

    job_id: str
    seq: int
    timestamp: datetime
    stream: LogStream
    data: str
