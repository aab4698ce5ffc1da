"""Which repositories a request may reach beyond a single run: listings and secrets.

A listing (runs, tags) is of one repository the caller may see; every repository's at once
only for admins. A secret belongs to one repository, which the caller must be able to see,
or is global: only admins manage (and list) global secrets, although every repository's jobs
get them.
"""

from __future__ import annotations

from dstack.server.errors import Forbidden
from dstack.server.principals import Principal, Role
from dstack.server.services.users import require_repo


def require_listing(principal: Principal, repo_id: str | None, *, what: str) -> None:
    """For a listing of `what` in `repo_id` (None: every repository). `NotFoundError` for a
    repository the principal may not see; `Forbidden` for every repository's, unless admin."""
    if repo_id is not None:
        require_repo(principal, repo_id)
    elif principal.role is not Role.ADMIN:
        raise Forbidden(
            f"listing the {what} of every repository needs an admin token; "
            "ask for one repository (repo_id), as `dstack` does for the current one"
        )


def require_secret_scope(principal: Principal, repo_id: str | None) -> None:
    """For managing the secrets of `repo_id` (None: the global ones)."""
    if repo_id is not None:
        require_repo(principal, repo_id)
    elif principal.role is not Role.ADMIN:
        raise Forbidden(
            "global secrets are managed by admins; "
            "manage the secrets of a repository instead (repo_id, or `dstack secrets` in it)"
        )


def is_admin(principal: Principal) -> bool:
    return principal.role is Role.ADMIN
