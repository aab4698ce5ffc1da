"""Which offers fit a request, cheapest first: shared by every backend."""

from __future__ import annotations

from collections.abc import Iterable

from dstack.models.backends import InstanceOffer, OfferResources
from dstack.models.resources import ResourcesSpec


def fits(spec: ResourcesSpec, machine: OfferResources) -> bool:
    """The request fits the whole machine: CPUs, memory, and enough GPUs of the asked name
    (case-insensitive substring) and memory."""
    if (spec.cpu or 1) > machine.cpus or (spec.memory_mib or 0) > machine.memory_mib:
        return False
    gpu = spec.gpu
    if gpu is None or gpu.count == 0:
        return True
    matching = [
        g
        for g in machine.gpus
        if (not gpu.name or gpu.name.lower() in g.name.lower())
        and (gpu.memory_mib is None or g.memory_mib >= gpu.memory_mib)
    ]
    return len(matching) >= gpu.count


def select(
    offers: Iterable[InstanceOffer],
    spec: ResourcesSpec,
    *,
    spot: bool | None = None,
    max_price: float | None = None,
) -> list[InstanceOffer]:
    """The offers that fit `spec` in the asked market under `max_price`, cheapest first
    (then fewest GPUs, fewest CPUs, by name: a stable order)."""
    chosen = [
        o
        for o in offers
        if fits(spec, o.resources)
        and (spot is None or o.spot == spot)
        and (max_price is None or o.price <= max_price)
    ]
    return sorted(
        chosen,
        key=lambda o: (o.price, len(o.resources.gpus), o.resources.cpus, o.instance_type, o.spot),
    )
