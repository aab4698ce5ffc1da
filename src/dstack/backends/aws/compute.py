"""`AwsCompute`: EC2 instances for a backend's `BackendConfig` (being built)."""

from __future__ import annotations

from dstack.errors import BackendError
from dstack.models.backends import BackendConfig, BackendCredentials


class AwsCompute:
    prices_as_of: str | None = None

    def __init__(self, config: BackendConfig, credentials: BackendCredentials) -> None:
        raise BackendError(f"backend '{config.name}': AWS is not available in this version")
