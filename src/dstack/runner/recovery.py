"""Finishing the jobs an earlier run of this runner held: sync what they left, then report.

A runner that restarts (or a new runner on the same work dir) finds the records of the jobs
it held (`dstack.runner.held`) before it claims new ones. For each: what is left of the
job's processes is killed; the artifacts in the job's folder are stored and their manifests
posted, joined with the manifests the earlier runner journaled; the log spool's remaining
lines are shipped; only then is the final status posted: the job's own end when it was
noted before the crash, else `failed` (`runner_lost`) saying the runner restarted.

The server keeps those jobs for the runner while it lists them in its heartbeats
(`dstack.server.services.runners`); a refusal (409: the server failed them meanwhile, or
gave them to another runner) ends the recovery of that job.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable

from dstack.api.runner import RunnerApi
from dstack.errors import ConflictError, DstackError, NotFoundError
from dstack.models.artifacts import Manifest
from dstack.models.job import JobStatus, TerminationReason
from dstack.models.protocol import JobAssignment, JobStatusUpdate, LogBatch, LogLine
from dstack.runner.artifacts import ArtifactSync
from dstack.runner.blobs import BlobStoreFactory
from dstack.runner.errors import JobStartError
from dstack.runner.held import HeldJob
from dstack.runner.job import post_manifest
from dstack.runner.logs import LogShipper, LogSpool
from dstack.runner.paths import job_paths
from dstack.runner.settings import RunnerSettings

log = logging.getLogger(__name__)

RESTARTED = "the runner restarted while the job ran; what it wrote was saved"


class Recovery:
    """Finishes one held job (see the module's docstring). `run` blocks until the job was
    reported, refused, or the runner shuts down (the record then stays for the next start)."""

    def __init__(
        self,
        held: HeldJob,
        *,
        settings: RunnerSettings,
        api: RunnerApi,
        executor: str,
        blob_store: BlobStoreFactory,
        shutdown: threading.Event,
    ) -> None:
        self._held = held
        self._settings = settings
        self._api = api
        self._executor = executor
        self._open_store = blob_store
        self._shutdown = shutdown
        self.job_dir = settings.jobs_dir / held.job_id

    @property
    def job_id(self) -> str:
        return self._held.job_id

    def run(self) -> None:
        assignment = self._held.assignment()
        if assignment is None:  # crashed before the record was whole: nothing ran
            self._held.release()
            return
        self._held.kill_leftover()
        update = self._held.final() or _restarted()
        spool = LogSpool(self.job_dir / "logs")
        shipper = LogShipper(spool, self._send_logs).start()
        try:
            update = self._sync(assignment, update, spool)
        finally:
            spool.close()
        if not self._drain(shipper) or not self._report(update):
            return  # shutting down: the record stays for the next start
        if not self._settings.keep_job_dirs:
            shutil.rmtree(self.job_dir, ignore_errors=True)
        else:  # the folder stays: without its spool's reserve
            spool.discard_reserve()
        self._held.release()

    def _sync(
        self, assignment: JobAssignment, update: JobStatusUpdate, spool: LogSpool
    ) -> JobStatusUpdate:
        """Store and post the job's artifacts (and caches, unless it was aborted); a job
        whose artifacts cannot be stored fails, as it would have without the crash."""
        if update.reason is TerminationReason.RUNNER_LOST:
            spool.say_error(f"error: {RESTARTED}")
        try:
            self._artifact_sync(assignment).finish(
                move=False, caches=update.status is not JobStatus.ABORTED, say=spool.write_line
            )
        except (DstackError, OSError) as exc:
            spool.say_error(f"error: cannot upload the artifacts: {exc}")
            if update.status is JobStatus.DONE:
                return JobStatusUpdate(
                    status=JobStatus.FAILED,
                    reason=TerminationReason.EXECUTOR_ERROR,
                    message=f"cannot upload the artifacts: {exc}",
                )
        return update

    def _artifact_sync(self, assignment: JobAssignment) -> ArtifactSync:
        spec = assignment.spec
        declared = [a.path for a in spec.artifacts] + spec.cache
        try:
            paths = job_paths(
                declared,
                job_dir=self.job_dir,
                working_dir=self.job_dir / "code" / spec.working_dir,
                executor=self._executor,
            )
        except JobStartError as exc:  # refused at the start too: nothing was written there
            raise DstackError(str(exc)) from exc
        return ArtifactSync(
            spec=spec,
            paths=paths,
            store=self._open_store(assignment.storage),
            settings=self._settings,
            post_artifact=self._poster(self._api.post_artifacts),
            post_cache=self._poster(self._api.post_cache),
            carried=self._held.journaled(),
        )

    def _poster(self, post: Callable[[str, Manifest], None]) -> Callable[[Manifest], None]:
        def send(manifest: Manifest) -> None:
            post_manifest(
                post, self.job_id, manifest, shutdown=self._shutdown, settings=self._settings
            )

        return send

    def _drain(self, shipper: LogShipper) -> bool:
        while not shipper.drain(timeout=1.0):
            if self._shutdown.is_set():
                shipper.abandon()
                return False
        return True

    def _report(self, update: JobStatusUpdate) -> bool:
        """Post the final status; False when the runner shut down first."""
        pause = self._settings.retry_backoff
        while not self._shutdown.is_set():
            try:
                self._api.post_status(self.job_id, update)
                log.info("recovered job %s: %s", self.job_id, update.status.value)
                return True
            except (ConflictError, NotFoundError) as exc:
                log.warning("job %s is no longer this runner's: %s", self.job_id, exc)
                return True
            except DstackError as exc:
                log.warning("reporting recovered job %s failed: %s", self.job_id, exc)
                self._shutdown.wait(pause)
                pause = min(pause * 2, self._settings.retry_backoff_max)
        return False

    def _send_logs(self, lines: list[LogLine]) -> None:
        self._api.post_logs(self.job_id, LogBatch.model_construct(lines=lines))


def _restarted() -> JobStatusUpdate:
    return JobStatusUpdate(
        status=JobStatus.FAILED, reason=TerminationReason.RUNNER_LOST, message=RESTARTED
    )
