"""The runner's side of the API: `RunnerApi`, what the runner daemon depends on, and
`RunnerClient`, its one HTTP implementation. `dstack.api.runner_fake.FakeRunnerApi` is the
in-memory twin; `tests/api/test_runner_contract.py` runs one suite against both.

Every method raises `AuthError` when the server refuses the token sent; `ConflictError` (or
its kind `ForbiddenError`, 403) when the job is not, or no longer, this runner's (forget it);
`NotFoundError` when the server does not know the runner or the job; `ServerUnreachableError`
when the server did not answer within the client's retry time; `ServerError` for the rest.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from dstack.api.blobs import HttpBlobStore
from dstack.api.plainhttp import Timeouts
from dstack.api.transport import Response, Transport
from dstack.errors import ServerError, ServerUnreachableError
from dstack.models.artifacts import Manifest, StorageAccess
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
from dstack.models.runner import SpotNotice

if TYPE_CHECKING:
    from dstack.storage.base import BlobStore


class RunnerApi(Protocol):
    @property
    def credential(self) -> str:
        """The token this client sends now: the registration token until `register` got the
        runner's own credential (or had a stored one accepted), then that one. Connections the
        client does not make itself (the tunnel's WebSockets) must carry it too."""

    def register(
        self, request: RegisterRunnerRequest, *, credential: str | None = None
    ) -> RegisterRunnerResponse:
        """Register this runner and bind the client to it (its id, its credential).

        Without `credential`, sent with the registration token: a new runner, whose answer
        carries its `runner_token` (shown once: store it), sent by every later request. With
        `credential` (the `runner_token` of an earlier registration), sent with it: the same
        runner (same `runner_id`, `runner_token` None), and every later request carries it.
        `ServerError` when a new registration got no credential. `AuthError` when the token
        sent is refused (a revoked credential, or a server that lost its database); the client
        is then as before.
        """

    def heartbeat(self, request: HeartbeatRequest) -> HeartbeatResponse:
        """Report the registered runner's running jobs; the answer says which to stop, abort or
        forget. `NotFoundError`: the server no longer knows this runner (register again)."""

    def claim(self, wait_seconds: float) -> JobAssignment | None:
        """Long-poll up to `wait_seconds` (plus the network's time) for a job; None when none
        came. `NotFoundError` as for `heartbeat`."""

    def post_status(self, job_id: str, update: JobStatusUpdate) -> JobAssignment | None:
        """Record a status change of a job this runner holds. A final status with `next_job`
        answers with the runner's next job as `claim(0)` would (None: none fits, or an older
        server); any other answers None."""

    def post_logs(self, job_id: str, batch: LogBatch) -> None:
        """Store log lines; lines whose seq the server already has are ignored (so a batch
        may be sent again after a lost answer)."""

    def post_artifacts(self, job_id: str, manifest: Manifest) -> None:
        """Replace the manifest of one artifact path of the job; its blobs are stored already
        (else `MissingBlobsError`, a `NotFoundError`)."""

    def post_cache(self, job_id: str, manifest: Manifest) -> None:
        """Save one workflow cache path after the job; its blobs are stored already."""

    def get_repo_credentials(self, job_id: str) -> CloneCredentials:
        """The URL and secret to clone the code of a job this runner holds (runs whose
        `RepoRef.clone_url` is set); `ConflictError` when the job is not active here."""

    def get_blob(self, digest: str, target: Path) -> None:
        """Download blob `digest` into `target` (created or replaced once verified; a corrupt
        download raises `StorageError` and leaves `target` as it was). Missing: `NotFoundError`.
        """

    def blob_store(self, access: StorageAccess) -> BlobStore:
        """The server's blob store as this runner reaches it, with its credential: through
        presigned URLs when `access.kind` is `presigned`, else the server's `/api/blobs`. (A
        `local` folder the runner can write is its own business: `runner.blobs`.) The store
        shares this client's session and credential; closing it is not needed."""


class RunnerClient:
    """`RunnerApi` over HTTP, on one `Transport` that carries the credential.

    Requests that never reached the server are sent again with exponential backoff for up to
    `retry_for` seconds, because the server may be restarting; error answers are not retried.
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
        self.transport = Transport(
            server_url,
            token,
            timeout=Timeouts(connect=5.0, read=30.0),
            retry_for=retry_for,
            backoff=backoff,
            backoff_max=backoff_max,
            auth_hint="check --token (DSTACK_RUNNER_TOKEN)",
            transport=transport,
            sleep=sleep,
        )
        self._registration_token = token
        self._headers: dict[str, str] = {"Content-Type": "application/json"}
        self.runner_id: str | None = None

    @property
    def credential(self) -> str:
        return self.transport.token

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> RunnerClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def register(
        self, request: RegisterRunnerRequest, *, credential: str | None = None
    ) -> RegisterRunnerResponse:
        token = credential if credential is not None else self._registration_token
        response = self._post("/api/runners/register", request.model_dump_json(), token=token)
        answer = RegisterRunnerResponse.model_validate_json(response.content)
        if credential is None and answer.runner_token is None:
            raise ServerError(
                "the server registered this runner without a credential of its own",
                hint="upgrade the dstack server to the runner's version",
            )
        self.runner_id = answer.runner_id
        self.transport.token = answer.runner_token or token
        return answer

    def heartbeat(self, request: HeartbeatRequest) -> HeartbeatResponse:
        response = self._post(f"/api/runners/{self._id()}/heartbeat", request.model_dump_json())
        return HeartbeatResponse.model_validate_json(response.content)

    def claim(self, wait_seconds: float) -> JobAssignment | None:
        body = ClaimRequest(wait_seconds=wait_seconds).model_dump_json()
        path = f"/api/runners/{self._id()}/claim"
        response = self._post(path, body, timeout=wait_seconds + 30)
        if response.status_code == 204 or not response.content:
            return None
        return JobAssignment.model_validate_json(response.content)

    def post_status(self, job_id: str, update: JobStatusUpdate) -> JobAssignment | None:
        body = update.model_dump_json(exclude_none=True)
        response = self._post(f"/api/jobs/{job_id}/status", body)
        if response.status_code == 204 or not response.content:
            return None
        return JobAssignment.model_validate_json(response.content)

    def post_logs(self, job_id: str, batch: LogBatch) -> None:
        self._post(f"/api/jobs/{job_id}/logs", batch.model_dump_json())

    def post_artifacts(self, job_id: str, manifest: Manifest) -> None:
        self._post(f"/api/jobs/{job_id}/artifacts", manifest.model_dump_json())

    def post_cache(self, job_id: str, manifest: Manifest) -> None:
        self._post(f"/api/jobs/{job_id}/caches", manifest.model_dump_json())

    def get_repo_credentials(self, job_id: str) -> CloneCredentials:
        path = f"/api/jobs/{job_id}/repo-credentials"
        response = self.transport.request("GET", path, headers=dict(self._headers))
        return CloneCredentials.model_validate_json(response.content)

    def get_blob(self, digest: str, target: Path) -> None:
        HttpBlobStore.sharing(self.transport).get_file(digest, target)

    def blob_store(self, access: StorageAccess) -> BlobStore:
        if access.kind == "presigned":
            # ~1.5 ms at the runner's start: only runners of presigned storage use it
            from dstack.api.presigned import PresignedBlobStore, ServerPresigner

            return PresignedBlobStore(ServerPresigner.sharing(self.transport))
        return HttpBlobStore.sharing(self.transport)

    def _post(self, path: str, body: str, **kwargs: Any) -> Response:
        headers = dict(self._headers)
        return self.transport.request("POST", path, content=body, headers=headers, **kwargs)

    def _id(self) -> str:
        if self.runner_id is None:
            raise RuntimeError("register() first")
        return self.runner_id


# IMDSv2 (EC2's instance metadata service): a session token first, then every read with it.
_TOKEN_PATH = "/latest/api/token"
_TOKEN_TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
_TOKEN_HEADER = "X-aws-ec2-metadata-token"
_INSTANCE_ACTION_PATH = "/latest/meta-data/spot/instance-action"
_MAX_NOTICE = 64 * 1024


class InstanceMetadataClient:
    """The instance metadata service of the machine the runner is on (EC2's at
    `http://169.254.169.254`, or a test's), read for spot interruption notices.

    IMDSv2: a token from `PUT /latest/api/token` (kept for half its `token_ttl`, fetched
    again after a 401), then `GET /latest/meta-data/spot/instance-action` with it. A service
    that answers the token request 403/404/405 (IMDSv1 only) is read without a token.
    `ServerUnreachableError` when the service does not answer within `timeout`; `ServerError`
    for an answer that is neither a notice nor "none" (404).
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 2.0,
        token_ttl: int = 21600,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"), timeout=timeout, transport=transport
        )
        self._token_ttl = token_ttl
        self._clock = clock
        self._token: str | None = None
        self._token_until = 0.0
        self._v1 = False

    def close(self) -> None:
        self._client.close()

    def spot_notice(self) -> SpotNotice | None:
        """The pending interruption notice, or None when there is none (404)."""
        response = self._get(_INSTANCE_ACTION_PATH)
        if response.status_code == 401 and not self._v1:
            self._token = None  # expired or revoked: one new token, one more try
            response = self._get(_INSTANCE_ACTION_PATH)
        if response.status_code == 404:
            return None
        if response.status_code != 200 or len(response.content) > _MAX_NOTICE:
            raise ServerError(
                f"the instance metadata service answered {response.status_code} "
                f"to {_INSTANCE_ACTION_PATH}"
            )
        try:
            return SpotNotice.model_validate_json(response.content)
        except ValueError as exc:
            raise ServerError(f"unreadable spot interruption notice: {exc}") from None

    def _get(self, path: str) -> httpx.Response:
        headers = {}
        token = self._session_token()
        if token is not None:
            headers[_TOKEN_HEADER] = token
        return self._request("GET", path, headers=headers)

    def _session_token(self) -> str | None:
        if self._v1:
            return None
        if self._token is not None and self._clock() < self._token_until:
            return self._token
        headers = {_TOKEN_TTL_HEADER: str(self._token_ttl)}
        response = self._request("PUT", _TOKEN_PATH, headers=headers)
        if response.status_code in (403, 404, 405):
            self._v1 = True
            return None
        if response.status_code != 200 or not response.text.strip():
            raise ServerError(
                f"the instance metadata service answered {response.status_code} to a token request"
            )
        self._token = response.text.strip()
        self._token_until = self._clock() + self._token_ttl / 2
        return self._token

    def _request(self, method: str, path: str, *, headers: dict[str, str]) -> httpx.Response:
        try:
            return self._client.request(method, path, headers=headers)
        except httpx.HTTPError as exc:
            raise ServerUnreachableError(
                f"the instance metadata service did not answer: {exc}"
            ) from None
