"""The team endpoints of the typed client: users, runner tokens and secrets (`Client` has
them all; this module only keeps `client.py` short)."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

from dstack.api.base import BaseClient, validate_list
from dstack.models.names import url_segment

# The models of these endpoints (~12 ms) are defined when a method needs them: `dstack run`
# does not.
if TYPE_CHECKING:
    from dstack.models.protocol import CreateUserResponse, Secret, User


class TeamsClient(BaseClient):
    # --- users (admin, but `me`) -------------------------------------------------------------
    def me(self) -> User:
        from dstack.models.protocol import User  # see the top

        return User.model_validate(self.request("GET", "/api/users/me").json())

    def list_users(self) -> list[User]:
        from dstack.models.protocol import User  # see the top

        return validate_list(User, self.request("GET", "/api/users").json())

    def create_user(
        self, name: str, *, is_admin: bool = False, repos: list[str] | None = None
    ) -> CreateUserResponse:
        """A new user and their token (shown once). `ConflictError` if the name is taken."""
        from dstack.models.protocol import CreateUserRequest, CreateUserResponse  # see the top

        body = CreateUserRequest(name=name, is_admin=is_admin, repos=repos)
        response = self.request("POST", "/api/users", json=body.model_dump(mode="json"))
        return CreateUserResponse.model_validate(response.json())

    def delete_user(self, name: str) -> None:
        """Remove a user; their token stops working at once."""
        self.request("DELETE", f"/api/users/{url_segment(name)}")

    def create_runner_token(self) -> str:
        """A new runner registration token (admin)."""
        from dstack.models.protocol import RunnerTokenResponse  # see the top

        response = self.request("POST", "/api/runners/tokens")
        return RunnerTokenResponse.model_validate(response.json()).token

    def delete_runner(self, name: str) -> None:
        """Remove a runner (admin): its credential stops working, its jobs are lost."""
        self.request("DELETE", f"/api/runners/{quote(name, safe='')}")

    # --- secrets ---------------------------------------------------------------------------
    def list_secrets(self, repo_id: str | None = None) -> list[Secret]:
        """Names and dates of the secrets of `repo_id` (and, for an admin, the global ones);
        the global ones alone without it (admins). Values never leave the server except to
        jobs."""
        from dstack.models.protocol import Secret  # see the top

        params = {"repo_id": repo_id} if repo_id is not None else {}
        return validate_list(Secret, self.request("GET", "/api/secrets", params=params).json())

    def add_secret(self, name: str, value: str, repo_id: str | None = None) -> Secret:
        """A secret of `repo_id` (None: global, admins). `ConflictError` if one of that name
        exists there."""
        from dstack.models.protocol import Secret, SecretRequest  # see the top

        body = SecretRequest(name=name, value=value, repo_id=repo_id).model_dump(mode="json")
        return Secret.model_validate(self.request("POST", "/api/secrets", json=body).json())

    def update_secret(self, name: str, value: str, repo_id: str | None = None) -> Secret:
        """`NotFoundError` if `repo_id` (None: global) has no secret of that name."""
        from dstack.models.protocol import Secret, SecretRequest  # see the top

        body = SecretRequest(name=name, value=value, repo_id=repo_id).model_dump(mode="json")
        return Secret.model_validate(self.request("PUT", "/api/secrets", json=body).json())

    def delete_secret(self, name: str, repo_id: str | None = None) -> None:
        """Delete secret `name` of `repo_id` (None: global, admins)."""
        params = {"repo_id": repo_id} if repo_id is not None else {}
        self.request("DELETE", f"/api/secrets/{url_segment(name)}", params=params)
