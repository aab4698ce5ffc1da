"""`RunnerClient`: the runner's side of the API (register, heartbeat, claim, report)."""

from __future__ import annotations

from typing import Any

from dstack.api.base import BaseClient
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

RUNNER_HEADER = "X-Dstack-Runner-Id"


class RunnerClient(BaseClient):
    """Job reports carry the runner's id (once registered) so the server can refuse reports
    about jobs that are no longer this runner's (`ConflictError`: forget the job)."""

    runner_id: str | None = None

    def register(self, request: RegisterRunnerRequest) -> RegisterRunnerResponse:
        body = request.model_dump(mode="json")
        response = self.request("POST", "/api/runners/register", json=body)
        result = RegisterRunnerResponse.model_validate(response.json())
        self.runner_id = result.runner_id
        return result

    def heartbeat(self, running_jobs: list[str]) -> HeartbeatResponse:
        body = HeartbeatRequest(running_jobs=running_jobs).model_dump(mode="json")
        response = self.request("POST", f"/api/runners/{self._id()}/heartbeat", json=body)
        return HeartbeatResponse.model_validate(response.json())

    def claim(self, wait_seconds: float = 10.0) -> JobAssignment | None:
        """The next job for this runner, or None when none came within `wait_seconds`."""
        body = ClaimRequest(wait_seconds=wait_seconds).model_dump(mode="json")
        extensions = {
            "timeout": {"connect": 10.0, "read": wait_seconds + 30, "write": 30, "pool": 30}
        }
        response = self.request(
            "POST", f"/api/runners/{self._id()}/claim", json=body, extensions=extensions
        )
        if response.status_code == 204:
            return None
        return JobAssignment.model_validate(response.json())

    def report_status(self, job_id: str, update: JobStatusUpdate) -> None:
        body = update.model_dump(mode="json")
        self.request("POST", f"/api/jobs/{job_id}/status", json=body, headers=self._headers())

    def send_logs(self, job_id: str, batch: LogBatch) -> None:
        body = batch.model_dump(mode="json")
        self.request("POST", f"/api/jobs/{job_id}/logs", json=body, headers=self._headers())

    def post_artifacts(self, job_id: str, manifest: Manifest) -> None:
        """Replace the job's manifest of `manifest.path`; its blobs must be stored already."""
        body = manifest.model_dump(mode="json")
        self.request("POST", f"/api/jobs/{job_id}/artifacts", json=body, headers=self._headers())

    def post_cache(self, job_id: str, manifest: Manifest) -> None:
        """Save a workflow cache path after the job; its blobs must be stored already."""
        body = manifest.model_dump(mode="json")
        self.request("POST", f"/api/jobs/{job_id}/caches", json=body, headers=self._headers())

    def _id(self) -> str:
        if self.runner_id is None:
            raise RuntimeError("register() first")
        return self.runner_id

    def _headers(self) -> dict[str, Any]:
        return {RUNNER_HEADER: self.runner_id} if self.runner_id else {}
