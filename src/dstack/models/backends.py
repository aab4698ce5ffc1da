"""Cloud backends as users and the server see them: a backend's settings, the machines it
offers, and the instances it created. Pure data, no I/O; the clouds' SDKs live in
`dstack.backends`."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from dstack.models.common import Model
from dstack.models.resources import GpuInfo, format_memory


class BackendType(StrEnum):
    AWS = "aws"
    MEMORY = "memory"  # the in-memory twin (`dstack.backends.memory`), for tests


class BackendLimits(Model):
    """What the server may spend through one backend."""

    max_instances: int = Field(4, ge=0, le=10_000, description="Instances alive at once.")
    max_price: float | None = Field(
        None, gt=0, le=10_000, description="Most USD per hour for one instance; None: no cap."
    )
    idle_timeout: float = Field(
        300.0, ge=0, le=7 * 24 * 3600, description="Seconds an idle instance lives."
    )


class BackendConfig(Model):
    """A backend's settings: everything but its credentials (shown back to admins)."""

    name: str = Field(min_length=1, max_length=100)
    type: BackendType
    region: str = Field(min_length=1, max_length=50)
    endpoint_url: str | None = Field(None, max_length=500, description="e.g. moto, LocalStack.")
    subnet: str | None = Field(None, max_length=100)
    ami: str | None = Field(None, max_length=100, description="None: the catalog's default AMI.")
    limits: BackendLimits = Field(default_factory=BackendLimits)


class BackendCredentials(Model):
    """Kept on the server only, encrypted; never shown back. Either keys or a profile of
    the server's own AWS configuration; neither: the server's default credential chain."""

    access_key_id: str | None = Field(None, max_length=200)
    secret_access_key: str | None = Field(None, max_length=200)
    profile: str | None = Field(None, max_length=100)


class OfferResources(Model):
    cpus: int
    memory_mib: int
    gpus: list[GpuInfo] = Field(default_factory=list)

    def describe(self) -> str:
        text = f"{self.cpus} CPU, {format_memory(self.memory_mib)}"
        if self.gpus:
            gpu = self.gpus[0]
            text += f", {len(self.gpus)}x{gpu.name} ({format_memory(gpu.memory_mib)})"
        return text


class InstanceOffer(Model):
    """One machine a backend can create: an instance type in a region, spot or on-demand,
    with its price per hour (USD)."""

    backend: str
    instance_type: str
    region: str
    spot: bool
    price: float = Field(ge=0)
    resources: OfferResources


class InstanceState(StrEnum):
    PENDING = "pending"  # created, not yet running
    RUNNING = "running"
    TERMINATING = "terminating"
    TERMINATED = "terminated"
    INTERRUPTED = "interrupted"  # the cloud took a spot instance back


class InstanceStatus(StrEnum):
    """An instance as its server records it (`InstanceRow.state`), from the decision to
    create it until it is gone."""

    CREATING = "creating"  # recorded, `Compute.create` asked (or about to be)
    BOOTING = "booting"  # created; its runner has not registered yet
    READY = "ready"  # its runner registered
    TERMINATING = "terminating"  # recorded as to terminate; `Compute.terminate` asked
    TERMINATED = "terminated"

    def is_alive(self) -> bool:
        return self is not InstanceStatus.TERMINATED


class CloudInstance(Model):
    """An instance as its cloud describes it."""

    id: str = Field(description="The cloud's id, e.g. `i-0abc...`.")
    name: str
    offer: InstanceOffer
    state: InstanceState
    tags: dict[str, str] = Field(default_factory=dict)
    created_at: datetime


class LaunchRequest(Model):
    """What `Compute.create` needs: the offer to create, the instance's name, the user-data
    script it boots with, and tags that mark it as this server's."""

    name: str
    offer: InstanceOffer
    user_data: str
    tags: dict[str, str] = Field(default_factory=dict)
