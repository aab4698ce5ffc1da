"""`Principal`: who sent a request, as authentication (`services/users.authenticate`) found it.

Plain data below the services and `ServerContext` (which caches principals by token), so that
both can name it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"
    USER = "user"
    RUNNER = "runner"


@dataclass(frozen=True)
class Principal:
    """Who sent a request: a user (maybe an admin) or a runner."""

    name: str
    role: Role
    repos: frozenset[str] | None = None
    # Role.RUNNER only: the runner this credential belongs to; None for a registration token,
    # which may only register.
    runner_id: str | None = None
    # Role.RUNNER only: the registration credential of a cloud instance (its name): it
    # registers that instance's runner only, once (`services/runners.register`).
    instance: str | None = None

    def can_see(self, repo_id: str) -> bool:
        """Whether runs of `repo_id` exist for this principal."""
        return self.repos is None or repo_id in self.repos

    @property
    def visible_repos(self) -> list[str] | None:
        return None if self.repos is None else sorted(self.repos)
