"""The backend endpoints of the typed client: configuring cloud backends (admins) and the
offers they make (any user). `Client` has them; this module keeps `client.py` short."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dstack.api.base import BaseClient, validate_list
from dstack.models.names import url_segment

# Defined when a method needs them: `dstack run` does not.
if TYPE_CHECKING:
    from dstack.models.backends import BackendConfig, BackendCredentials
    from dstack.models.backends_api import BackendInfo, OffersResponse
    from dstack.models.resources import ResourcesSpec


class BackendsClient(BaseClient):
    def add_backend(
        self, config: BackendConfig, credentials: BackendCredentials | None = None
    ) -> BackendInfo:
        """Add a backend (admin). The server checks the credentials with the cloud first:
        `ConfigError` if it refuses them, `BackendError` if it cannot be asked,
        `ConflictError` if the name is taken; nothing is stored then."""
        # the backends' models (~15 ms) only here: every command's client loads this module
        from dstack.models.backends import BackendCredentials
        from dstack.models.backends_api import AddBackendRequest, BackendInfo

        body = AddBackendRequest(config=config, credentials=credentials or BackendCredentials())
        response = self.request("POST", "/api/backends", json=body.model_dump(mode="json"))
        return BackendInfo.model_validate(response.json())

    def list_backends(self) -> list[BackendInfo]:
        """The backends and their settings (admin); never their credentials."""
        from dstack.models.backends_api import BackendInfo  # see add_backend

        return validate_list(BackendInfo, self.request("GET", "/api/backends").json())

    def delete_backend(self, name: str) -> None:
        """Forget a backend (admin); `ConflictError` while it has instances alive."""
        self.request("DELETE", f"/api/backends/{url_segment(name)}")

    def offers(
        self,
        resources: ResourcesSpec,
        *,
        spot: bool | None = None,
        max_price: float | None = None,
        limit: int = 100,
    ) -> OffersResponse:
        """What the backends offer for `resources`, cheapest first."""
        from dstack.models.backends_api import OffersRequest, OffersResponse  # see add_backend

        body = OffersRequest(resources=resources, spot=spot, max_price=max_price, limit=limit)
        response = self.request("POST", "/api/offers", json=body.model_dump(mode="json"))
        return OffersResponse.model_validate(response.json())
