"""Runners: the daemons that execute jobs."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from dstack.models.common import Model
from dstack.models.resources import HostResources


class RunnerStatus(StrEnum):
    READY = "ready"
    BUSY = "busy"
    OFFLINE = "offline"


class Runner(Model):
    id: str
    name: str
    host: str
    resources: HostResources
    executors: list[str] = Field(description="`docker`, `process`.")
    labels: dict[str, str] = Field(default_factory=dict)
    backend: str = "local"
    status: RunnerStatus
    last_heartbeat: datetime | None = None
    running_jobs: list[str] = Field(default_factory=list, description="Ids of jobs it holds.")
