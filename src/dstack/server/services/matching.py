"""Whether a job fits a runner — ever (its whole machine) or now (what is left free).

Pure functions over models. A job without a CPU request takes one CPU slot, so a runner runs
at most `cpus` such jobs at once; memory and GPUs are subtracted; GPUs are given by index.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from dstack.models.resources import GpuInfo, HostResources, ResourcesSpec


@dataclass(frozen=True)
class Allocation:
    """What one job holds on a runner."""

    cpus: int
    memory_mib: int
    gpu_indexes: tuple[int, ...]


@dataclass(frozen=True)
class FreeResources:
    cpus: int
    memory_mib: int
    gpus: tuple[GpuInfo, ...]


def cpu_slots(spec: ResourcesSpec) -> int:
    return spec.cpu or 1


def gpu_matches(gpu: GpuInfo, spec: ResourcesSpec) -> bool:
    """A GPU satisfies the request's name (case-insensitive substring: `A100` matches
    `NVIDIA A100-SXM4-40GB`) and per-GPU memory."""
    request = spec.gpu
    if request is None:
        return True
    if request.name and request.name.lower() not in gpu.name.lower():
        return False
    return request.memory_mib is None or gpu.memory_mib >= request.memory_mib


def fits_ever(spec: ResourcesSpec, host: HostResources) -> bool:
    """The job could run on this machine if it had it to itself."""
    whole = FreeResources(host.cpus, host.memory_mib, tuple(host.gpus))
    return allocate(spec, whole) is not None


def free_resources(host: HostResources, held: Iterable[Allocation]) -> FreeResources:
    """What remains of `host` once the jobs holding `held` are accounted for."""
    cpus, memory = host.cpus, host.memory_mib
    taken: set[int] = set()
    for allocation in held:
        cpus -= allocation.cpus
        memory -= allocation.memory_mib
        taken.update(allocation.gpu_indexes)
    gpus = tuple(g for g in host.gpus if g.index not in taken)
    return FreeResources(cpus, memory, gpus)


def allocate(spec: ResourcesSpec, free: FreeResources) -> Allocation | None:
    """The allocation for `spec` out of `free`, lowest GPU indexes first; None if it does
    not fit."""
    cpus = cpu_slots(spec)
    memory = spec.memory_mib or 0
    if cpus > free.cpus or memory > free.memory_mib:
        return None
    matching = sorted(g.index for g in free.gpus if gpu_matches(g, spec))
    if len(matching) < spec.gpu_count:
        return None
    return Allocation(cpus, memory, tuple(matching[: spec.gpu_count]))


def labels_match(wanted: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """A runner takes a job only if it has every label the job asks for, with that value."""
    return all(labels.get(key) == value for key, value in wanted.items())


def describe_labels(labels: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))


def no_capacity_message(spec: ResourcesSpec, runners: Iterable[tuple[str, HostResources]]) -> str:
    """`asked for 1xA100; runners: local (2 CPU, 24GB)`."""
    offers = "; ".join(f"{name} ({host.describe()})" for name, host in runners)
    return f"asked for {describe_request(spec)}; runners: {offers or 'none registered'}"


def describe_request(spec: ResourcesSpec) -> str:
    text = spec.describe()
    return f"{cpu_slots(spec)} CPU" if text == "-" else text


def waiting_message(spec: ResourcesSpec, hosts: Iterable[tuple[str, HostResources]]) -> str:
    """Why a job that a runner could take waits: every runner it fits is short of free disk
    (each named, with its free space and minimum), or they are all busy."""
    fitting = [(name, host) for name, host in hosts if fits_ever(spec, host)]
    low = [(name, host) for name, host in fitting if host.low_disk]
    if not fitting or len(low) < len(fitting):
        return "waiting for a free runner"
    details = "; ".join(
        f"runner '{name}' has {host.disk_mib} MiB free for jobs, "
        f"below its minimum of {host.min_free_disk_mib} MiB"
        for name, host in low
    )
    return f"waiting for a runner with free disk: {details}"
