"""Typed HTTP clients of the dstack server: `Client` (users), `RunnerClient` (runners), both on
one `Transport` (`dstack.api.transport`)."""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dstack.api.client import Client
    from dstack.api.runner import RunnerClient

__all__ = ["Client", "RunnerClient"]


def __getattr__(name: str) -> Any:
    # Defined on first use only: a command's start imports `Client` and not the runner
    # endpoints' models, and the blob stores import `dstack.api.transport` and neither.
    if name == "Client":
        from dstack.api.client import Client  # ~145 ms (httpx, pydantic): see above

        return Client
    if name == "RunnerClient":
        from dstack.api.runner import RunnerClient  # ~155 ms: see above

        return RunnerClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
