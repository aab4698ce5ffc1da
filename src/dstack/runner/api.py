"""The runner's view of the server: the runner endpoints of `docs/api.md`, nothing more.

`RunnerApi` is what the daemon depends on; `HttpRunnerApi` speaks HTTP, tests inject an
in-memory twin. Every method raises `AuthError` on a bad token, `NotFoundError` when the
server does not know the runner or job, `ConflictError` when the job is no longer this
runner's, and `ServerError` for anything else.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from dstack.errors import AuthError, ConflictError, NotFoundError, ServerError
from dstack.models.artifacts import Manifest
from dstack.models.protocol import (
    ClaimRequest,
    HeartbeatRequest,
    HeartbeatResponse,
    JobAssignment,
    JobStatusUpdate,
    LogBatch,
    RegisterRunnerRequest,
    RegisterRunnerResponse,
)
from dstack.models.repo import CloneCredentials

if TYPE_CHECKING:
    import httpx


class RunnerApi(Protocol):
    def register(self, request: RegisterRunnerRequest) -> RegisterRunnerResponse:
        """Announce this runner; returns its id (the same id when `runner_id` was given)."""

    def heartbeat(self, runner_id: str, request: HeartbeatRequest) -> HeartbeatResponse:
        """Report running jobs; the answer says which to stop, abort or forget."""

    def claim(self, runner_id: str, wait_seconds: float) -> JobAssignment | None:
        """Long-poll up to `wait_seconds` for a job; None when none came."""

    def post_status(self, job_id: str, update: JobStatusUpdate) -> None:
        """Record a status change of a job this runner holds."""

    def post_logs(self, job_id: str, batch: LogBatch) -> None:
        """Store log lines; lines whose seq the server already has are ignored."""

    def get_blob(self, digest: str, target: Path) -> None:
        """Download blob `digest` into `target` (created or replaced)."""

    def post_artifacts(self, job_id: str, manifest: Manifest) -> None:
        """Replace the manifest of one artifact path of the job; its blobs are stored already."""

    def post_cache(self, job_id: str, manifest: Manifest) -> None:
        """Save one workflow cache path after the job; its blobs are stored already."""

    def get_repo_credentials(self, job_id: str) -> CloneCredentials:
        """The URL and secret to clone the code of a job this runner holds (runs whose
        `RepoRef.clone_url` is set); `ConflictError` when the job is not active here."""


class HttpRunnerApi:
    """`RunnerApi` over HTTP (httpx).

    Connection errors are retried with exponential backoff for up to `retry_for` seconds,
    because the server may be restarting; HTTP error answers are not retried.
    """

    def __init__(
        self,
        server_url: str,
        token: str,
        *,
        retry_for: float = 60.0,
        backoff: float = 0.5,
        backoff_max: float = 5.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        import httpx

        self._client = httpx.Client(
            base_url=server_url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(30.0, connect=5.0),
            transport=transport,
        )
        self._server_url = server_url
        self._retry_for = retry_for
        self._backoff = backoff
        self._backoff_max = backoff_max
        self._sleep = sleep

    def close(self) -> None:
        self._client.close()

    def register(self, request: RegisterRunnerRequest) -> RegisterRunnerResponse:
        response = self._request(
            "POST", "/api/runners/register", json_body=request.model_dump_json()
        )
        answer = RegisterRunnerResponse.model_validate_json(response.content)
        # Lets the server refuse reports about jobs that are no longer this runner's.
        self._client.headers["X-Dstack-Runner-Id"] = answer.runner_id
        return answer

    def heartbeat(self, runner_id: str, request: HeartbeatRequest) -> HeartbeatResponse:
        path = f"/api/runners/{runner_id}/heartbeat"
        response = self._request("POST", path, json_body=request.model_dump_json())
        return HeartbeatResponse.model_validate_json(response.content)

    def claim(self, runner_id: str, wait_seconds: float) -> JobAssignment | None:
        body = ClaimRequest(wait_seconds=wait_seconds).model_dump_json()
        response = self._request(
            "POST", f"/api/runners/{runner_id}/claim", json_body=body, timeout=wait_seconds + 30
        )
        if response.status_code == 204 or not response.content:
            return None
        return JobAssignment.model_validate_json(response.content)

    def post_status(self, job_id: str, update: JobStatusUpdate) -> None:
        body = update.model_dump_json(exclude_none=True)
        self._request("POST", f"/api/jobs/{job_id}/status", json_body=body)

    def post_logs(self, job_id: str, batch: LogBatch) -> None:
        self._request("POST", f"/api/jobs/{job_id}/logs", json_body=batch.model_dump_json())

    def post_artifacts(self, job_id: str, manifest: Manifest) -> None:
        body = manifest.model_dump_json()
        self._request("POST", f"/api/jobs/{job_id}/artifacts", json_body=body)

    def post_cache(self, job_id: str, manifest: Manifest) -> None:
        self._request("POST", f"/api/jobs/{job_id}/caches", json_body=manifest.model_dump_json())

    def get_repo_credentials(self, job_id: str) -> CloneCredentials:
        response = self._request("GET", f"/api/jobs/{job_id}/repo-credentials", json_body="")
        return CloneCredentials.model_validate_json(response.content)

    def get_blob(self, digest: str, target: Path) -> None:
        import httpx

        from dstack.storage.base import mismatch

        partial = target.with_name(target.name + ".part")
        hasher = hashlib.sha256()
        try:
            with self._client.stream("GET", f"/api/blobs/{digest}") as response:
                _raise_for_status(response, read=True)
                with partial.open("wb") as out:
                    for chunk in response.iter_bytes(1 << 20):
                        hasher.update(chunk)
                        out.write(chunk)
        except httpx.HTTPError as exc:
            raise ServerError(
                f"cannot download blob {digest[:12]} from {self._server_url}: {exc}"
            ) from exc
        if hasher.hexdigest() != digest:
            partial.unlink(missing_ok=True)
            raise mismatch(digest, hasher.hexdigest())
        partial.replace(target)

    def _request(
        self, method: str, path: str, *, json_body: str, timeout: float | None = None
    ) -> httpx.Response:
        import httpx

        deadline = time.monotonic() + self._retry_for
        pause = self._backoff
        while True:
            try:
                response = self._client.request(
                    method,
                    path,
                    content=json_body,
                    headers={"Content-Type": "application/json"},
                    timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
                )
            except httpx.TransportError as exc:
                if time.monotonic() + pause > deadline:
                    raise ServerError(
                        f"cannot reach the server at {self._server_url}: {exc}",
                        "check that it runs and that --server is right",
                    ) from exc
                self._sleep(pause)
                pause = min(pause * 2, self._backoff_max)
                continue
            _raise_for_status(response)
            return response


def _raise_for_status(response: httpx.Response, *, read: bool = False) -> None:
    """Translate an error answer into the project's errors, keeping the server's message."""
    if response.status_code < 400:
        return
    if read:
        response.read()
    message, hint = _error_text(response)
    where = f"{response.request.method} {response.request.url.path}"
    if response.status_code == 401:
        raise AuthError(f"the server refused the runner's token ({where})", hint or "check --token")
    error_type: type[ServerError] = ServerError
    if response.status_code == 404:
        raise NotFoundError(f"{where}: {message}", hint)
    if response.status_code == 409:
        raise ConflictError(f"{where}: {message}", hint)
    raise error_type(f"{where} failed ({response.status_code}): {message}", hint)


def _error_text(response: httpx.Response) -> tuple[str, str | None]:
    try:
        error = response.json()["error"]
        return str(error.get("message") or response.reason_phrase), error.get("hint")
    except (ValueError, KeyError, TypeError, AttributeError):
        return response.text[:200] or response.reason_phrase, None
