"""Runners: the daemons that execute jobs."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import ConfigDict, Field

from dstack.models.common import Model
from dstack.models.resources import HostResources


class RunnerStatus(StrEnum):
    READY = "ready"
    BUSY = "busy"
    OFFLINE = "offline"
    INTERRUPTED = "interrupted"
    """It reported a spot interruption: its machine is going away; it gets no more jobs
    (offline once its heartbeats stop; registering again makes it ready)."""


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
    address: str | None = Field(None, description="Where other runners reach it.")
    resources: HostResources
    executors: list[str] = Field(description="`docker`, `process`.")
    labels: dict[str, str] = Field(default_factory=dict)
    backend: str = "local"
    status: RunnerStatus
    last_heartbeat: datetime | None = None
    running_jobs: list[str] = Field(default_factory=list, description="Ids of jobs it holds.")
    instance: RunnerInstance | None = Field(None, description="Cloud runners: their instance.")


class SpotNotice(Model):
    """A spot interruption notice, as the instance metadata service gives it
    (`/latest/meta-data/spot/instance-action`): the instance is about to be reclaimed."""

    model_config = ConfigDict(extra="ignore")  # the cloud's document, not ours: may grow

    action: str = Field(max_length=40, description="`terminate`, `stop` or `hibernate`.")
    time: datetime | None = Field(None, description="When the cloud acts (UTC).")

    def describe(self) -> str:
        """`spot instance interrupted: terminate at 2026-12-07 04:30:00 UTC`."""
        when = f" at {self.time:%Y-%m-%d %H:%M:%S} UTC" if self.time else ""
        return f"spot instance interrupted: {self.action}{when}"
