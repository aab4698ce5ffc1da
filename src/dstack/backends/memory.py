"""`MemoryCompute`: the in-memory twin of a cloud, for tests and for trying the scheduler
without an account. It keeps instances in a dict, and lets a test take capacity away
(`set_capacity`), take a spot instance back (`interrupt`) and "boot" what it creates
(`on_create`, called with each new instance and its launch request)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from dstack.backends.base import BackendAuthError, NoCapacityError
from dstack.backends.offers import select
from dstack.errors import BackendError
from dstack.models.backends import (
    CloudInstance,
    InstanceOffer,
    InstanceState,
    LaunchRequest,
    OfferResources,
)
from dstack.models.resources import GpuInfo, ResourcesSpec

OnCreate = Callable[[CloudInstance, LaunchRequest], None]


def default_catalog(backend: str = "memory", region: str = "local") -> list[InstanceOffer]:
    """A small catalog in the shape of a real one: CPU machines and GPU machines, each on
    demand and spot (spot at 30% of the price)."""
    machines = [
        ("cpu.small", 2, 4096, [], 0.10),
        ("cpu.large", 8, 32768, [], 0.40),
        ("gpu.t4", 4, 16384, [GpuInfo(index=0, name="T4", memory_mib=15360)], 0.53),
        (
            "gpu.a100x2",
            24,
            196608,
            [GpuInfo(index=i, name="A100", memory_mib=40960) for i in range(2)],
            6.5,
        ),
    ]
    return [
        InstanceOffer(
            backend=backend,
            instance_type=name,
            region=region,
            spot=spot,
            price=round(price * (0.3 if spot else 1.0), 4),
            resources=OfferResources(cpus=cpus, memory_mib=memory, gpus=gpus),
        )
        for name, cpus, memory, gpus, price in machines
        for spot in (False, True)
    ]


class MemoryCompute:
    def __init__(
        self,
        name: str = "memory",
        *,
        region: str = "local",
        catalog: list[InstanceOffer] | None = None,
        on_create: OnCreate | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.name = name
        self.prices_as_of: str | None = None
        self.region = region
        self.catalog = catalog if catalog is not None else default_catalog(name, region)
        self.on_create = on_create
        self.clock = clock
        self.instances: dict[str, CloudInstance] = {}
        self.launches: list[LaunchRequest] = []  # every create asked for, in order
        self.refuse_credentials = False
        self._no_capacity: set[tuple[str, bool]] = set()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    # --- what a test controls -------------------------------------------------------------

    def set_capacity(self, instance_type: str, *, spot: bool, available: bool) -> None:
        """Make creating `instance_type` in that market fail with `NoCapacityError` (or
        work again)."""
        key = (instance_type, spot)
        if available:
            self._no_capacity.discard(key)
        else:
            self._no_capacity.add(key)

    def interrupt(self, instance_id: str) -> None:
        """Take a spot instance back, as a cloud does."""
        self._set_state(instance_id, InstanceState.INTERRUPTED)

    def alive(self) -> list[CloudInstance]:
        return [i for i in self.instances.values() if i.state in _ALIVE]

    # --- Compute --------------------------------------------------------------------------

    def check(self) -> None:
        if self.refuse_credentials:
            raise BackendAuthError(f"backend '{self.name}': the credentials were refused")

    def offers(self, request: ResourcesSpec, *, spot: bool | None = None) -> list[InstanceOffer]:
        return select(self.catalog, request, spot=spot)

    def create(self, request: LaunchRequest) -> CloudInstance:
        offer = request.offer
        if offer not in self.catalog:
            raise BackendError(f"backend '{self.name}': no instance type {offer.instance_type}")
        with self._lock:
            self.launches.append(request)
            if (offer.instance_type, offer.spot) in self._no_capacity:
                market = "spot" if offer.spot else "on-demand"
                raise NoCapacityError(
                    f"backend '{self.name}': no {market} capacity for {offer.instance_type}"
                )
            instance = CloudInstance(
                id=f"m-{next(self._ids):08x}",
                name=request.name,
                offer=offer,
                state=InstanceState.RUNNING,
                tags=dict(request.tags),
                created_at=self.clock(),
            )
            self.instances[instance.id] = instance
        if self.on_create is not None:
            self.on_create(instance, request)
        return instance

    def describe(self, instance_id: str) -> CloudInstance | None:
        return self.instances.get(instance_id)

    def list_instances(self, tags: Mapping[str, str]) -> list[CloudInstance]:
        return [i for i in self.alive() if all(i.tags.get(k) == v for k, v in tags.items())]

    def terminate(self, instance_id: str) -> None:
        instance = self.instances.get(instance_id)
        if instance is not None and instance.state in _ALIVE:
            self._set_state(instance_id, InstanceState.TERMINATED)

    def close(self) -> None:
        pass

    def _set_state(self, instance_id: str, state: InstanceState) -> None:
        with self._lock:
            instance = self.instances[instance_id]
            self.instances[instance_id] = instance.model_copy(update={"state": state})


_ALIVE = frozenset({InstanceState.PENDING, InstanceState.RUNNING})
