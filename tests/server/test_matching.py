from __future__ import annotations

from dstack.models.resources import GpuRequest, ResourcesSpec
from dstack.server.services.matching import (
    Allocation,
    allocate,
    fits_ever,
    free_resources,
    no_capacity_message,
)

from .conftest import host


def test_a_job_without_cpu_request_takes_one_slot() -> None:
    machine = host(cpus=2)
    held = [Allocation(1, 0, ())]

    assert allocate(ResourcesSpec(), free_resources(machine, held)) is not None
    assert allocate(ResourcesSpec(), free_resources(machine, held * 2)) is None


def test_memory_is_subtracted() -> None:
    machine = host(memory_gb=24)
    free = free_resources(machine, [Allocation(1, 20 * 1024, ())])

    assert allocate(ResourcesSpec(memory_mib=8 * 1024), free) is None
    assert allocate(ResourcesSpec(memory_mib=4 * 1024), free) is not None


def test_gpus_are_allocated_by_index_lowest_free_first() -> None:
    machine = host(cpus=8, gpus=[("NVIDIA A100-SXM4-40GB", 40960)] * 4)
    want_two = ResourcesSpec(gpu=GpuRequest(count=2))

    first = allocate(want_two, free_resources(machine, []))
    assert first is not None
    assert first.gpu_indexes == (0, 1)
    second = allocate(want_two, free_resources(machine, [first]))
    assert second is not None
    assert second.gpu_indexes == (2, 3)
    assert allocate(want_two, free_resources(machine, [first, second])) is None


def test_gpu_name_and_memory_must_match() -> None:
    machine = host(gpus=[("Tesla T4", 15360)])

    assert fits_ever(ResourcesSpec(gpu=GpuRequest(count=1, name="t4")), machine)
    assert not fits_ever(ResourcesSpec(gpu=GpuRequest(count=1, name="A100")), machine)
    assert not fits_ever(ResourcesSpec(gpu=GpuRequest(count=1, memory_mib=40960)), machine)


def test_no_capacity_message_names_request_and_runners() -> None:
    spec = ResourcesSpec(gpu=GpuRequest(count=4, name="A100"))

    message = no_capacity_message(spec, [("local", host(cpus=2, memory_gb=24))])

    assert message == "asked for 4xA100; runners: local (2 CPU, 24 GiB)"
