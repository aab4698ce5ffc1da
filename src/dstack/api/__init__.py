"""Typed HTTP clients of the dstack server: `Client` (users), `RunnerClient` (runners)."""

from dstack.api.client import Client
from dstack.api.runner import RunnerClient

__all__ = ["Client", "RunnerClient"]
