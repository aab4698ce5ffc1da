"""Job logs: ordered, byte-exact, timestamped lines."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from dstack.models.common import Model


class LogStream(StrEnum):
    STDOUT = "stdout"
    STDERR = "stderr"


class LogEvent(Model):
    """A chunk of output. `seq` is the position in the job's log (from 0), unique per job."""

    job_id: str
    seq: int
    timestamp: datetime
    stream: LogStream
    data: str
