"""What a job asks for, and what a runner has. Pure data, no I/O."""

from __future__ import annotations

import re

from pydantic import Field

from dstack.models.common import Model
from dstack.models.sizes import format_mib

_MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
# The most nodes (machines) one multi-node job takes.
MAX_NODES = 256
_UNITS_MIB = {"": 1.0, "b": 1 / 2**20, "k": 1 / 1024, "m": 1.0, "g": 1024.0, "t": 1024.0**2}


def parse_memory_mib(value: str | int | float) -> int:
    """Parse ``16GB``, ``512MiB``, ``1.5G`` or a bare number of MiB into MiB.

    ``GB`` and ``GiB`` both mean 1024 MiB: the early dstack format wrote ``GB`` for GiB.
    Raises ``ValueError`` with a short reason on anything else.
    """
    if isinstance(value, bool):
        raise ValueError("expected a size such as 16GB or 512MiB")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return int(value)
    match = _MEMORY_RE.match(value)
    if not match:
        raise ValueError(f"'{value}' is not a size such as 16GB or 512MiB")
    number, unit = match.groups()
    factor = _UNITS_MIB[(unit or "")[:1].lower()]
    return int(float(number) * factor)


def format_memory(mib: int) -> str:
    """``16 GiB``, ``512 MiB``: the one unit system of `dstack.models.sizes`."""
    return format_mib(mib)


class GpuRequest(Model):
    count: int = Field(1, ge=0, description="Number of GPUs.")
    name: str | None = Field(None, description="GPU model, e.g. `A100`; case-insensitive.")
    memory_mib: int | None = Field(None, ge=0, description="Minimum memory per GPU, in MiB.")


class ResourcesSpec(Model):
    cpu: int | None = Field(None, ge=1, description="Number of CPUs.")
    memory_mib: int | None = Field(None, ge=0, description="Memory, in MiB.")
    gpu: GpuRequest | None = Field(None, description="GPUs; absent or count 0 means none.")
    shm_size_mib: int | None = Field(None, ge=0, description="Size of /dev/shm, in MiB.")
    interruptible: bool = Field(False, description="May run on spot/preemptible capacity.")
    local: bool = Field(False, description="Run on this machine even when a remote is set.")
    nodes: int = Field(1, ge=1, le=MAX_NODES, description="Number of machines (multi-node jobs).")

    @property
    def gpu_count(self) -> int:
        return self.gpu.count if self.gpu else 0

    def describe(self) -> str:
        """One short line: ``2 CPU, 16GB, 1xA100 (40GB)``."""
        parts: list[str] = []
        if self.cpu:
            parts.append(f"{self.cpu} CPU")
        if self.memory_mib:
            parts.append(format_memory(self.memory_mib))
        if self.gpu and self.gpu.count:
            gpu = f"{self.gpu.count}x{self.gpu.name or 'GPU'}"
            if self.gpu.memory_mib:
                gpu += f" ({format_memory(self.gpu.memory_mib)})"
            parts.append(gpu)
        if self.shm_size_mib:
            parts.append(f"shm {format_memory(self.shm_size_mib)}")
        if self.interruptible:
            parts.append("interruptible")
        return ", ".join(parts) or "-"


class GpuInfo(Model):
    index: int
    name: str
    memory_mib: int


class HostResources(Model):
    """What a runner's machine has."""

    cpus: int
    memory_mib: int
    disk_mib: int = Field(
        description="Free space of the folder jobs live in (updated by each heartbeat)."
    )
    gpus: list[GpuInfo] = Field(default_factory=list)
    min_free_disk_mib: int = Field(
        0, ge=0, description="The runner takes no job while `disk_mib` is below this."
    )

    @property
    def low_disk(self) -> bool:
        """Too little free disk for the runner to take a job."""
        return self.disk_mib < self.min_free_disk_mib

    def describe(self) -> str:
        text = f"{self.cpus} CPU, {format_memory(self.memory_mib)}"
        if self.gpus:
            names = sorted({g.name for g in self.gpus})
            text += f", {len(self.gpus)}x{'/'.join(names)}"
        return text
