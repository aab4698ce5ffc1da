"""Typed HTTP clients of the dstack server: `Client` (users), `RunnerClient` (runners)."""

from typing import TYPE_CHECKING, Any

from dstack.api.client import Client

if TYPE_CHECKING:
    from dstack.api.runner import RunnerClient

__all__ = ["Client", "RunnerClient"]


def __getattr__(name: str) -> Any:
    # `RunnerClient` brings the runner endpoints' models: defined on first use only, so
    # that a command's start (which imports `Client`) does not pay for them.
    if name == "RunnerClient":
        from dstack.api.runner import RunnerClient

        return RunnerClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
