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


class RunnerInstance(Model):
    """The cloud instance a cloud runner lives on."""

    cloud_id: str | None = Field(None, description="The cloud's id, e.g. `i-0abc...`.")
    instance_type: str
    spot: bool
    price: float = Field(description="USD per hour.")
    state: str = Field(description="`creating`, `booting`, `ready`, `terminating`, `terminated`.")


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
    instance: RunnerInstance | None = Field(None, description="Cloud runners: their instance.")
