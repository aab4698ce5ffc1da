"""Backend type → `Compute`. One line per cloud; the cloud's SDK is imported only when a
backend of its type is used (boto3 costs ~150 ms of start-up the CLI does not need)."""

from __future__ import annotations

from collections.abc import Callable

from dstack.backends.base import Compute
from dstack.backends.memory import MemoryCompute
from dstack.errors import BackendError
from dstack.models.backends import BackendConfig, BackendCredentials, BackendType

ComputeFactory = Callable[[BackendConfig, BackendCredentials], Compute]

METADATA_URLS = {BackendType.AWS: "http://169.254.169.254"}
"""The instance metadata service of each cloud, where a spot instance's runner watches for an
interruption notice (`dstack-runner start --metadata-url`)."""


def make_compute(config: BackendConfig, credentials: BackendCredentials) -> Compute:
    """The `Compute` of a configured backend (no API call is made here)."""
    if config.type == BackendType.AWS:
        from dstack.backends.aws.compute import AwsCompute  # boto3: only when used

        return AwsCompute(config, credentials)
    if config.type == BackendType.MEMORY:
        return MemoryCompute(config.name, region=config.region)
    raise BackendError(f"backend '{config.name}': unknown type {config.type}")
