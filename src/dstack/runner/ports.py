"""Which host ports belong to which job on a runner: what `TunnelAgent` may dial.

A job's host ports are picked when it starts and reported to the server with its `running`
status; `PortRecorder` sits in front of the runner's API and notes them on the way.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, cast

from dstack.models.job import JobStatus
from dstack.models.protocol import JobAssignment, JobStatusUpdate

if TYPE_CHECKING:
    from dstack.api.runner import RunnerApi


class JobPorts:
    """Host ports by job id; thread-safe."""

    def __init__(self) -> None:
        self._ports: dict[str, frozenset[int]] = {}
        self._lock = threading.Lock()

    def record(self, job_id: str, ports: list[int]) -> None:
        with self._lock:
            self._ports[job_id] = frozenset(ports)

    def forget(self, job_id: str) -> None:
        with self._lock:
            self._ports.pop(job_id, None)

    def has(self, job_id: str, port: int) -> bool:
        with self._lock:
            return port in self._ports.get(job_id, frozenset())


class PortRecorder:
    """A `RunnerApi` that passes every call through and records the host ports of the
    `running` reports it carries (once the server accepted them), forgetting a job's ports
    when its final status goes out."""

    def __init__(self, api: RunnerApi, ports: JobPorts) -> None:
        self._api = api
        self._ports = ports

    def post_status(self, job_id: str, update: JobStatusUpdate) -> JobAssignment | None:
        if update.status.is_finished():
            self._ports.forget(job_id)
        answer = self._api.post_status(job_id, update)
        if update.status == JobStatus.RUNNING and update.host_ports is not None:
            self._ports.record(job_id, update.host_ports)
        return answer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._api, name)

    def as_api(self) -> RunnerApi:
        """This recorder, typed as the API it stands in for."""
        return cast("RunnerApi", self)
