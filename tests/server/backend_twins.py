"""A compute factory for tests: every backend the server builds is a `MemoryCompute` twin,
kept by name, with knobs per backend name (refuse its credentials, fail its offers)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from dstack.backends.base import BackendAuthError
from dstack.backends.memory import MemoryCompute
from dstack.errors import BackendError
from dstack.models.backends import (
    BackendConfig,
    BackendCredentials,
    BackendType,
    InstanceOffer,
    OfferResources,
)
from dstack.models.backends_api import AddBackendRequest
from dstack.models.resources import ResourcesSpec
from dstack.server.db.models import InstanceRow

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYzEXAMPLEKEY"


class Twin(MemoryCompute):
    def __init__(self, factory: Twins, config: BackendConfig, credentials: BackendCredentials):
        super().__init__(config.name, region=config.region)
        self.factory = factory
        self.config = config
        self.credentials = credentials
        self.prices_as_of = "2026-11-30"
        self.closed = False

    def check(self) -> None:
        if self.config.name in self.factory.refuse:
            raise BackendAuthError(
                f"backend '{self.config.name}': AWS was not able to validate the provided "
                f"access credentials (secret {self.credentials.secret_access_key})"
            )
        if self.config.name in self.factory.unreachable:
            raise BackendError(f"backend '{self.config.name}': could not connect to the endpoint")

    def offers(self, request: ResourcesSpec, *, spot: bool | None = None) -> list[InstanceOffer]:
        if self.config.name in self.factory.broken:
            raise BackendError(f"backend '{self.config.name}': DescribeInstanceTypes failed")
        return super().offers(request, spot=spot)

    def close(self) -> None:
        self.closed = True


class Twins:
    """`compute_factory` of a test's server; `built` lists every twin in order."""

    def __init__(self) -> None:
        self.built: list[Twin] = []
        self.refuse: set[str] = set()
        self.unreachable: set[str] = set()
        self.broken: set[str] = set()
        self.buggy: set[str] = set()  # the factory itself fails, as a bug would

    def __call__(self, config: BackendConfig, credentials: BackendCredentials) -> Twin:
        if config.name in self.buggy:
            raise KeyError("region_name")
        twin = Twin(self, config, credentials)
        self.built.append(twin)
        return twin

    def alive(self) -> list[Twin]:
        return [t for t in self.built if not t.closed]


def aws_body(
    name: str = "aws", *, max_price: float | None = None, **config: object
) -> dict[str, object]:
    """The JSON of a request adding an AWS backend, as a client sends it (not validated)."""
    return {
        "config": {
            "name": name,
            "type": BackendType.AWS.value,
            "region": "us-east-1",
            "limits": {"max_price": max_price},
            **config,
        },
        "credentials": {"access_key_id": "AKIAEXAMPLE", "secret_access_key": SECRET},
    }


def aws_request(
    name: str = "aws", *, max_price: float | None = None, **config: object
) -> AddBackendRequest:
    return AddBackendRequest.model_validate(aws_body(name, max_price=max_price, **config))


def instance_row(backend: str, state: str, name: str = "i-1") -> InstanceRow:
    offer = InstanceOffer(
        backend=backend,
        instance_type="cpu.small",
        region="us-east-1",
        spot=False,
        price=0.1,
        resources=OfferResources(cpus=2, memory_mib=4096),
    )
    return InstanceRow(
        id=name,
        name=name,
        backend=backend,
        offer=offer.model_dump(mode="json"),
        instance_type=offer.instance_type,
        region=offer.region,
        spot=False,
        price=0.1,
        state=state,
        created_at=datetime(2023, 3, 1, tzinfo=UTC) - timedelta(hours=1),
    )


def text_of(row: Mapping[str, Any]) -> str:
    return " ".join(str(v) for v in row.values())
