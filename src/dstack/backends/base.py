"""`Compute`: what the server asks of a cloud. One implementation per cloud (`aws`), an
in-memory twin (`memory`), one contract suite over both (tests/backends/).

Calls block (cloud SDKs do): the server runs them in a worker thread. Every failure is a
`BackendError` naming the backend and the action; capacity a cloud does not have right now
is `NoCapacityError`, so the caller moves on to the next offer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from dstack.errors import BackendError
from dstack.models.backends import CloudInstance, InstanceOffer, LaunchRequest
from dstack.models.resources import ResourcesSpec


class NoCapacityError(BackendError):
    """The cloud has no capacity for this offer now (AWS: `InsufficientInstanceCapacity`,
    spot capacity or price); another offer, or the same one later, may work."""


class BackendAuthError(BackendError):
    """The cloud refused the credentials (wrong keys, expired, missing permissions)."""


class Compute(Protocol):
    """One configured backend (a cloud account in one region)."""

    # The date of the price catalog its offers' prices come from (`2026-11-30`); None when
    # the prices are the cloud's own, live.
    prices_as_of: str | None

    def check(self) -> None:
        """Make one real, read-only API call with the credentials; `BackendAuthError` if the
        cloud refuses them, `BackendError` if it cannot be reached."""
        ...

    def offers(self, request: ResourcesSpec, *, spot: bool | None = None) -> list[InstanceOffer]:
        """The offers that fit `request` (whole machine), cheapest first; `spot` None: both
        markets."""
        ...

    def create(self, request: LaunchRequest) -> CloudInstance:
        """Create an instance of `request.offer` that boots `request.user_data`, tagged with
        `request.tags`. `NoCapacityError` when the cloud has none."""
        ...

    def describe(self, instance_id: str) -> CloudInstance | None:
        """The instance now; None once the cloud forgot it. A spot instance the cloud took
        back is `INTERRUPTED`."""
        ...

    def list_instances(self, tags: Mapping[str, str]) -> list[CloudInstance]:
        """Every instance not yet terminated that has all of `tags` (to find what a crashed
        server left behind)."""
        ...

    def terminate(self, instance_id: str) -> None:
        """Terminate the instance; terminating one already gone is not an error."""
        ...

    def close(self) -> None: ...
