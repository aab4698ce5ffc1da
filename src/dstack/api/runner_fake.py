"""`FakeRunnerApi`: the in-memory twin of `RunnerApi` (client and server in one), for tests.

It keeps the server's side of the contract: the registration token only registers and gets a
new runner with its own credential; that credential re-registers the same runner and is the
only one the other calls accept; a revoked or unknown one is refused (`AuthError`). Tests queue
jobs (`assignments`) and heartbeat answers (`answers`), read what the runner reported
(`statuses`, `lines`, `artifacts`, `caches`, `events`), and see every token it sent (`sent`).
"""

from __future__ import annotations

import itertools
import queue
import secrets
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from dstack.errors import AuthError, ForbiddenError, NotFoundError, ServerError
from dstack.models.artifacts import Manifest, StorageAccess
from dstack.models.digests import digest_bytes
from dstack.models.job import JobStatus
from dstack.models.logs import LogStream
from dstack.models.protocol import (
    HeartbeatRequest,
    HeartbeatResponse,
    JobAssignment,
    JobStatusUpdate,
    LogBatch,
    LogLine,
    RegisterRunnerRequest,
    RegisterRunnerResponse,
)
from dstack.models.repo import CloneCredentials
from dstack.models.resources import HostResources
from dstack.storage.base import BlobStore
from dstack.storage.memory import MemoryBlobStore

REGISTRATION_TOKEN = "fake-registration-token"


class FakeRunnerApi:
    """`RunnerApi` in memory, judging each call as the server does: by the runner's own
    credential, on jobs this runner holds and that are not final."""

    def __init__(
        self,
        *,
        registration_token: str = REGISTRATION_TOKEN,
        server_id: str | None = None,
    ) -> None:
        self.registration_token = registration_token
        """What the client registers with."""
        self._valid_registration_token = registration_token
        # Unique unless given: runners of two fakes on one Docker engine are of two servers.
        self.server_id = server_id or f"fake-{secrets.token_hex(6)}"
        self.registrations: list[RegisterRunnerRequest] = []
        self.heartbeats: list[HeartbeatRequest] = []
        self.assignments: queue.Queue[JobAssignment] = queue.Queue()
        self.answers: queue.Queue[HeartbeatResponse] = queue.Queue()
        self.statuses: dict[str, list[JobStatusUpdate]] = defaultdict(list)
        self.lines: dict[str, dict[int, LogLine]] = defaultdict(dict)
        self.store = MemoryBlobStore()
        self.artifacts: dict[str, list[Manifest]] = defaultdict(list)
        self.caches: dict[str, list[Manifest]] = defaultdict(list)
        self.clone_credentials: CloneCredentials | None = None
        """What `get_repo_credentials` answers (None: `NotFoundError`)."""
        self.clone_requests: list[str] = []
        self.events: dict[str, list[str]] = defaultdict(list)
        """Per job, in order: `status:<status>`, `artifacts:<path>`, `cache:<path>`."""
        self.sent: list[tuple[str, str]] = []
        """Every call as (method, token it carried), in order."""
        self.log_failures = 0
        self.batches = 0
        self.tokens: dict[str, str] = {}
        """The server's side: runner credential → runner id (revoked ones removed)."""
        self.holders: dict[str, str] = {}
        """The server's side: job id → the runner that claimed it."""
        self.finished: set[str] = set()
        self.next_jobs: list[str] = []
        """Jobs handed out in the answer of a final status (`next_job`), in order."""
        self._ids = itertools.count(1)
        self._token = registration_token
        self.runner_id: str | None = None
        self._cond = threading.Condition()

    # --- RunnerApi ---------------------------------------------------------------------------
    @property
    def credential(self) -> str:
        return self._token

    def register(
        self, request: RegisterRunnerRequest, *, credential: str | None = None
    ) -> RegisterRunnerResponse:
        token = credential if credential is not None else self.registration_token
        with self._cond:
            self.sent.append(("register", token))
            answer = self._register(request, token)
            self.registrations.append(request)
            self.runner_id = answer.runner_id
            self._token = answer.runner_token or token
        return answer

    def heartbeat(self, request: HeartbeatRequest) -> HeartbeatResponse:
        self._call("heartbeat")
        self.heartbeats.append(request)
        try:
            return self.answers.get_nowait()
        except queue.Empty:
            return HeartbeatResponse()

    def claim(self, wait_seconds: float) -> JobAssignment | None:
        self._call("claim")
        try:
            assignment = self.assignments.get(timeout=min(wait_seconds, 0.05))
        except queue.Empty:
            return None
        return self._hand_out(assignment)

    def _hand_out(self, assignment: JobAssignment) -> JobAssignment:
        with self._cond:
            assert self.runner_id is not None
            self.holders[assignment.job_id] = self.runner_id
            self.finished.discard(assignment.job_id)  # handed out again: active again
        return assignment

    def post_status(self, job_id: str, update: JobStatusUpdate) -> JobAssignment | None:
        with self._cond:
            last = self.statuses[job_id][-1] if self.statuses[job_id] else None
        if job_id in self.finished and last is not None and _same_final(last, update):
            return self._next_job(update)  # the final status resent (a lost answer)
        self._call("post_status", job_id)
        with self._cond:
            if update.status.is_finished():
                self.finished.add(job_id)
            self.statuses[job_id].append(update)
            self.events[job_id].append(f"status:{update.status}")
            self._cond.notify_all()
        return self._next_job(update)

    def _next_job(self, update: JobStatusUpdate) -> JobAssignment | None:
        """What a final status with `next_job` is answered: a claim without waiting."""
        if not (update.next_job and update.status.is_finished()):
            return None
        try:
            assignment = self.assignments.get_nowait()
        except queue.Empty:
            return None
        self.next_jobs.append(assignment.job_id)
        return self._hand_out(assignment)

    def post_logs(self, job_id: str, batch: LogBatch) -> None:
        self._call("post_logs", job_id)
        with self._cond:
            if self.log_failures > 0:
                self.log_failures -= 1
                raise ServerError("POST /api/jobs/x/logs failed (503): restarting")
            self.batches += 1
            for line in batch.lines:
                self.lines[job_id].setdefault(line.seq, line)

    def post_artifacts(self, job_id: str, manifest: Manifest) -> None:
        self._call("post_artifacts", job_id)
        with self._cond:
            self.artifacts[job_id].append(manifest)
            self.events[job_id].append(f"artifacts:{manifest.path}")
            self._cond.notify_all()

    def post_cache(self, job_id: str, manifest: Manifest) -> None:
        self._call("post_cache", job_id)
        with self._cond:
            self.caches[job_id].append(manifest)
            self.events[job_id].append(f"cache:{manifest.path}")
            self._cond.notify_all()

    def get_repo_credentials(self, job_id: str) -> CloneCredentials:
        self._call("get_repo_credentials", job_id)
        self.clone_requests.append(job_id)
        if self.clone_credentials is None:
            raise NotFoundError(f"job {job_id} has no clone credentials")
        return self.clone_credentials

    def get_blob(self, digest: str, target: Path) -> None:
        self._call("get_blob")
        self.store.get_file(digest, target)

    def blob_store(self, access: StorageAccess) -> BlobStore:
        self._call("blob_store")
        return self.store

    # --- the server's side -------------------------------------------------------------------
    def revoke(self, runner_id: str) -> None:
        """Revoke the credentials of `runner_id` (as an admin would, or a lost database)."""
        with self._cond:
            self.tokens = {t: r for t, r in self.tokens.items() if r != runner_id}

    def rotate_registration_token(self, new: str) -> None:
        """The server accepts only `new` from now on (the client keeps sending its own)."""
        self._valid_registration_token = new

    def _register(self, request: RegisterRunnerRequest, token: str) -> RegisterRunnerResponse:
        if token in self.tokens:
            return RegisterRunnerResponse(runner_id=self.tokens[token], server_id=self.server_id)
        if token != self._valid_registration_token:
            raise AuthError("the dstack server rejected the token")
        runner_id, runner_token = f"runner-{next(self._ids)}", secrets.token_urlsafe(16)
        self.tokens[runner_token] = runner_id
        return RegisterRunnerResponse(
            runner_id=runner_id, runner_token=runner_token, server_id=self.server_id
        )

    def _call(self, method: str, job_id: str | None = None) -> None:
        """Note the call and check it as the server would: a runner's own credential of a
        registered runner; for a job, one this runner
        claimed and that is not final."""
        with self._cond:
            token = self._token
            self.sent.append((method, token))
            if self.runner_id is None:
                raise RuntimeError("register() first")
            if token not in self.tokens:
                raise AuthError("the dstack server rejected the token")
            if job_id is None:
                return
            if self.holders.get(job_id) != self.runner_id or job_id in self.finished:
                raise ForbiddenError(f"job {job_id} is not, or no longer, this runner's")

    # --- for tests ---------------------------------------------------------------------------
    def registered(self, name: str = "test-runner") -> FakeRunnerApi:
        """This fake, registered as a runner `name` (for tests that call it without a daemon)."""
        resources = HostResources(cpus=1, memory_mib=1024, disk_mib=1024)
        self.register(
            RegisterRunnerRequest(name=name, host="test", resources=resources, executors=[])
        )
        return self

    def hold(self, *job_ids: str) -> None:
        """Give these jobs to the registered runner, as if it had claimed them."""
        with self._cond:
            assert self.runner_id is not None, "register() first"
            self.holders.update(dict.fromkeys(job_ids, self.runner_id))

    def add_blob(self, data: bytes) -> str:
        digest = digest_bytes(data)
        self.store.put_bytes(data, digest)
        return digest

    def clear_blobs(self) -> None:
        for digest in list(self.store.list_digests()):
            self.store.delete(digest)

    def wait_manifest(
        self, job_id: str, accept: Callable[[Manifest], bool], timeout: float = 20
    ) -> Manifest:
        """The first artifact manifest posted for the job that `accept`s."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for manifest in self.artifacts[job_id]:
                    if accept(manifest):
                        return manifest
                left = deadline - time.monotonic()
                assert left > 0, f"no such manifest of {job_id}: {self.artifacts[job_id]}"
                self._cond.wait(left)

    def latest(self, job_id: str, path: str) -> Manifest:
        """The last manifest the job posted for an artifact path (what the server keeps)."""
        return [m for m in self.artifacts[job_id] if m.path == path][-1]

    def wait_final(self, job_id: str, timeout: float = 20) -> JobStatusUpdate:
        return self.wait_status(job_id, lambda s: s.is_finished(), timeout)

    def wait_status(
        self, job_id: str, accept: Callable[[JobStatus], bool], timeout: float = 20
    ) -> JobStatusUpdate:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for update in self.statuses[job_id]:
                    if accept(update.status):
                        return update
                left = deadline - time.monotonic()
                assert left > 0, f"no such status of {job_id}: {self.statuses[job_id]}"
                self._cond.wait(left)

    def text(self, job_id: str, stream: LogStream | None = None) -> str:
        lines = [self.lines[job_id][seq] for seq in sorted(self.lines[job_id])]
        return "".join(line.data for line in lines if stream is None or line.stream == stream)


def _same_final(last: JobStatusUpdate, update: JobStatusUpdate) -> bool:
    return (last.status, last.exit_code) == (update.status, update.exit_code)
