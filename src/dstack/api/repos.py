"""The repository endpoints of the typed client: how runners clone a repository
(`dstack init`). `Client` has them; this module only keeps `client.py` short."""

from __future__ import annotations

from dstack.api.base import BaseClient
from dstack.errors import NotFoundError
from dstack.models.repo import (
    CredentialKind,
    RepoCredentials,
    RepoCredentialsRequest,
    RepoCredentialsResponse,
)


class ReposClient(BaseClient):
    def get_repo_credentials(self, repo_id: str) -> RepoCredentials | None:
        """What the server stores for `repo_id` (never the secret); None when nothing."""
        try:
            response = self.request("GET", "/api/repos/credentials", params={"repo_id": repo_id})
        except NotFoundError:
            return None
        return RepoCredentials.model_validate(response.json())

    def set_repo_credentials(
        self,
        repo_id: str,
        url: str,
        kind: CredentialKind,
        secret: str | None = None,
        *,
        check: bool = True,
    ) -> RepoCredentialsResponse:
        """Store how runners clone `repo_id`. With `check` the server tries them first:
        `ConfigError` when the remote refuses them; a warning when it cannot reach it."""
        body = RepoCredentialsRequest(
            repo_id=repo_id, url=url, kind=kind, secret=secret, check=check
        ).model_dump(mode="json")
        response = self.request("PUT", "/api/repos/credentials", json=body)
        return RepoCredentialsResponse.model_validate(response.json())

    def delete_repo_credentials(self, repo_id: str) -> None:
        """Forget them (`NotFoundError` if none): later runs upload bundles."""
        self.request("DELETE", "/api/repos/credentials", params={"repo_id": repo_id})
