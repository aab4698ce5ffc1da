"""The project's errors: one root with a user-facing message and a hint.

Foreign errors (docker, httpx, boto3, OS, yaml) are translated where they enter the project
into the subclass of their kind (``raise StorageError(...) from exc``; a cloud's SDK:
``BackendError``). Only the CLI prints them: one line, then the hint.
"""

from __future__ import annotations


class DstackError(Exception):
    """Root of every error the project raises on purpose.

    ``message`` says what happened and where; ``hint`` says what to do next. ``exit_code`` is
    the CLI's exit status when it ends a command.
    """

    exit_code: int = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} — {self.hint}"


class ConfigError(DstackError):
    """A `.dstack/` file, a variable or a CLI argument is invalid."""


class RepoError(DstackError):
    """The git working copy cannot be read (not a repository, git missing, ...)."""


class NotFoundError(DstackError):
    """A run, job, tag, runner or blob that was asked for does not exist."""


class MissingBlobsError(NotFoundError):
    """A request names blobs the server's store does not hold (upload them, then ask again)."""


class ConflictError(DstackError):
    """The request clashes with the current state (name taken, run still running, ...)."""


class StorageError(DstackError):
    """The blob store failed, or a blob does not match its digest."""


class ExecutorError(DstackError):
    """An executor (docker, process) could not start or control a job."""


class BackendError(DstackError):
    """A backend (a cloud: AWS, ...) failed to list offers, create or terminate a machine,
    or answered in a way the project does not understand. Raised with the SDK's error as
    its cause; the message names the backend and the action."""


class ServerError(DstackError):
    """The server could not be reached, or answered with an error."""


class AuthError(ServerError):
    """The token is missing or invalid."""


class ServerUnreachableError(ServerError):
    """No answer from the server (connection refused, DNS, TLS, timeout): the one error every
    client raises for it, so callers can tell "retry later" from "the server said no"."""


class ServerGoneError(ServerUnreachableError):
    """A client that rides out a server's restart gave up: the server stayed away longer
    than its bound. Its own exit status (75, EX_TEMPFAIL), apart from the usual 1."""

    exit_code = 75


class ForbiddenError(ConflictError):
    """The token is valid but may not do this (HTTP 403): another runner's job, a final one,
    another repository's run. A conflict to a runner: the job is not, or no longer, its own."""
