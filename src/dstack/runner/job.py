"""One claimed job, from code download to its final status, on its own thread."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

from dstack.api.runner import RunnerApi
from dstack.background import Background
from dstack.errors import (
    ConflictError,
    DstackError,
    ForbiddenError,
    NotFoundError,
    ServerUnreachableError,
)
from dstack.models.artifacts import Manifest
from dstack.models.job import JobStatus, TerminationReason
from dstack.models.protocol import JobAssignment, JobStatusUpdate, LogBatch, LogLine
from dstack.runner.apps import AppProbe, probe_targets
from dstack.runner.artifacts import ArtifactSync
from dstack.runner.blobs import BlobStoreFactory, open_blob_store
from dstack.runner.checkouts import CheckoutCache
from dstack.runner.code import fetch_code
from dstack.runner.environment import allocate_ports, job_env, with_secret_references
from dstack.runner.errors import JobStartError
from dstack.runner.executors.base import Executor, ExitResult, JobHandle, JobLaunch
from dstack.runner.faults import pause_point
from dstack.runner.held import HeldJob
from dstack.runner.inputs import place_inputs
from dstack.runner.logs import LogShipper, LogSpool
from dstack.runner.paths import JobPaths, job_paths
from dstack.runner.resources import disk_space, gpu_env, is_no_space
from dstack.runner.settings import RunnerSettings
from dstack.runner.trash import Trash
from dstack.storage.base import BlobStore, is_local

log = logging.getLogger(__name__)

_RUNNING_AFTER = 0.02
"""Seconds a job runs before it is reported `running`: one over sooner reports only its
end, sparing the server a write and the final status a report to overtake."""
_TIDY_AFTER = 2.0
"""Seconds a finished job's worker lets the next job start before it tidies up."""
_CROSSED_MAX = 3
"""Times a final status is posted again after a 409 (the job changed meanwhile)."""


class JobWorker:
    """Runs one assignment and reports it: downloading → running → uploading → final status.

    `downloading` fetches the code and places the dependencies' artifacts and the workflow
    caches (a job whose code is checked out here already and that has neither goes straight to
    `running`); `running` is reported once the job ran for `_RUNNING_AFTER` (one over sooner
    reports only its end); `uploading` (only for jobs with artifacts or caches) is the final
    artifact sync, after the job's processes are gone, whatever way they ended. `request_stop`,
    `request_abort` and `forget` may be called from any thread at any time; the final status is
    posted only after every log line was shipped. `blob_store` opens the store a job's
    `StorageAccess` names (default: `open_blob_store`); `checkouts` keeps checked-out code for
    later jobs of the same code (default: none). `held` is this job's record in the runner's
    work dir (`dstack.runner.held`): the job's process, how it ended and the journal of its
    final sync go there, for a restarted runner to finish the job; it is released once the final
    status was accepted. `next_job`, when given, runs the runner's next job: the final status
    asks the server for it (`JobStatusUpdate.next_job`), saving the claim's round trip, unless
    the runner shuts down or this job was interrupted; the next job's process starts before this
    worker tidies up (`launched`).
    """

    def __init__(
        self,
        assignment: JobAssignment,
        *,
        settings: RunnerSettings,
        api: RunnerApi,
        executor: Executor,
        shutdown: threading.Event,
        blob_store: BlobStoreFactory | None = None,
        checkouts: CheckoutCache | None = None,
        held: HeldJob | None = None,
        trash: Trash | None = None,
        next_job: Callable[[JobAssignment], JobWorker | None] | None = None,
    ) -> None:
        self.assignment = assignment
        self._next_job = next_job
        self._handed: JobAssignment | None = None
        """The next job, from the final status's answer."""
        self._trash = trash
        self._held = held
        self._checkouts = checkouts
        self._open_store = blob_store or (lambda access: open_blob_store(access, api))
        self._store: BlobStore | None = None
        self._sync: ArtifactSync | None = None
        self._running: Background[bool] | None = None
        """The `running` report, once the job started: every later report but the final
        one waits for it."""
        self._exited = threading.Event()
        """The job's processes are gone: a `running` report not sent yet is not sent."""
        self._final_out = False
        """The final status is being posted: a report still in flight was overtaken by it."""
        self.launched = threading.Event()
        """Set once the job's process started, or the worker is done without starting it."""
        self._settings = settings
        self._api = api
        self._executor = executor
        self._shutdown = shutdown
        self.job_dir = settings.jobs_dir / assignment.job_id
        self._lock = threading.Lock()
        self._handle: JobHandle | None = None
        self._stop_requested = False
        self._abort_requested = False
        self._forgotten = False
        self._interruption: str | None = None
        """Why the job is interrupted (its machine is going away), once it is."""
        self._spool: LogSpool | None = None
        self._shipper: LogShipper | None = None
        self.final: JobStatusUpdate | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"job-{assignment.job_id}", daemon=True
        )

    @property
    def job_id(self) -> str:
        return self.assignment.job_id

    def start(self) -> JobWorker:
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the worker to finish; False when `timeout` passed first."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def ended(self) -> bool:
        """Started, and done (not the same as `not is_alive()` before `start`)."""
        return self._thread.ident is not None and not self._thread.is_alive()

    def request_stop(self) -> None:
        """SIGTERM the job, SIGKILL after the grace period; it ends as `stopped`."""
        with self._lock:
            if self._stop_requested or self._abort_requested:
                return
            self._stop_requested = True
            handle = self._handle
        if handle is not None:
            grace = self._settings.stop_grace
            threading.Thread(target=handle.stop, args=(grace,), daemon=True).start()

    def request_abort(self) -> None:
        """SIGKILL the job at once; it ends as `aborted`."""
        with self._lock:
            self._abort_requested = True
            handle = self._handle
        if handle is not None:
            handle.kill()

    def request_interrupt(self, reason: str, *, flush_timeout: float = 30.0) -> None:
        """The machine is going away (a spot interruption): on a thread of its own, say so in
        the job's log, sync its artifacts now (what the folders hold now, as the final sync
        does), ship its log lines, then stop it as `request_stop` does. It ends `failed` with
        reason `interrupted` and `reason` as its message, which the server re-queues when the
        job's `retry` allows. Ignored for a job already being stopped or aborted (that ends
        it as asked)."""
        with self._lock:
            if self._stop_requested or self._abort_requested or self._interruption:
                return
            self._interruption = reason
        threading.Thread(
            target=self._save_then_stop,
            args=(reason, flush_timeout),
            name=f"interrupt-{self.job_id}",
            daemon=True,
        ).start()

    def _save_then_stop(self, reason: str, flush_timeout: float) -> None:
        spool, sync, shipper = self._spool, self._sync, self._shipper
        if spool is not None:
            spool.say_error(f"interrupted: {reason}; saving artifacts and logs")
        if sync is not None:
            try:
                synced = sync.sync_now()
            except Exception:  # a bug must not keep the job from stopping
                log.exception("syncing the artifacts of interrupted job %s failed", self.job_id)
            else:
                if spool is not None and synced:
                    spool.write_line(f"interrupted: synced {synced} artifact path(s)")
        if shipper is not None and not shipper.flush(flush_timeout):
            log.warning("the logs of interrupted job %s are not all shipped yet", self.job_id)
        with self._lock:
            if self._abort_requested:
                return
            self._stop_requested = True
            handle = self._handle
        if handle is not None:
            handle.stop(self._settings.stop_grace)

    def forget(self) -> None:
        """Kill the job and drop it: no further status or log goes to the server."""
        with self._lock:
            self._forgotten = True
        self.request_abort()

    def _run(self) -> None:
        try:
            self._run_job()
        finally:
            self.launched.set()

    def _run_job(self) -> None:
        try:
            spool = LogSpool(self.job_dir / "logs", secrets=self.assignment.secrets.values())
        except OSError as exc:  # not even an empty log fits: the job cannot start here
            self._post(_failed_by(exc, self.job_dir, "cannot start the job's log"), final=True)
            return
        shipper = LogShipper(spool, self._send_logs).start()
        self._spool, self._shipper = spool, shipper
        try:
            update = self._execute(spool)
        except Exception as exc:  # a bug must still end the job, with its reason shown
            log.exception("job %s crashed the runner's worker", self.job_id)
            update = _failed_by(exc, self.job_dir, "runner error")
        update = _disk_verdict(update, self.job_dir)
        if update is not None and self._held is not None:
            self._held.note_final(update)
        try:
            update = self._upload(update, spool)
        except Exception as exc:  # as above: report the job, keep the reason of its end
            log.exception("job %s crashed the runner's artifact upload", self.job_id)
            update = _upload_failed(update, exc)
        finally:
            spool.close()
        update = _lost_output_verdict(update, spool)
        if self._running_refused():
            update = None
        following: JobWorker | None = None
        try:
            following = self._finish(update, shipper)
        finally:
            if following is not None:  # the next job starts first; what follows only tidies
                following.launched.wait(_TIDY_AFTER)
            if self._handle is not None:
                self._handle.cleanup()
            self._close_store()
        if not self._settings.keep_job_dirs:
            if self._trash is not None:  # off the next job's way
                self._trash.put(self.job_dir)
            else:
                shutil.rmtree(self.job_dir, ignore_errors=True)
        else:  # the folder stays: without its spool's reserve
            spool.discard_reserve()
        if self._held is not None:
            self._held.release()
        if self._running is not None:  # its answer may come after the final status's
            self._running.result()

    def _execute(self, spool: LogSpool) -> JobStatusUpdate | None:
        """Run the job; the final status to report (None: forgotten, report nothing)."""
        # `downloading` is posted while the code is fetched and the inputs are placed: the
        # job starts one round trip sooner, and nothing is started (nor another status
        # posted) before it was accepted. A job with nothing to download (its code checked
        # out already, no inputs) goes straight to `running`, which the server must accept
        # before the job goes on.
        pause_point("claim", self.job_id)
        downloading = None
        if not self._nothing_to_download():
            downloading = Background(self._post_downloading, name="status-post")

        def accepted() -> bool:
            return downloading is None or downloading.result()

        pause_point("checkout", self.job_id)
        try:
            code_dir = fetch_code(
                self._api,
                self.assignment.repo,
                self.job_dir,
                local_store=self._local_store(),
                checkouts=self._checkouts,
                mirrors_dir=self._settings.mirrors_dir,
                git_timeouts=self._settings.git_timeouts,
            )
        except DstackError as exc:
            if not accepted():
                return None
            spool.say_error(f"error: cannot fetch the code: {exc}")
            return _failed(TerminationReason.EXECUTOR_ERROR, f"cannot fetch the code: {exc}")
        host_ports = allocate_ports(self.assignment.spec)
        try:
            paths = self._paths(code_dir)  # refuses a path that would leave the job's dir
            if self._has_inputs() and not self._cancelled():
                place_inputs(self.assignment, paths, self._blob_store(), spool.write_line)
            if not accepted():
                return None
            if self._cancelled():
                return self._final(None)
            handle = self._executor.start(self._context(spool, code_dir, paths, host_ports))
        except JobStartError as exc:
            if not accepted():
                return None
            spool.say_error(f"error: {exc}")
            return _failed(exc.reason, str(exc))
        self._attach(handle)
        # `running` is posted once the job ran for `_RUNNING_AFTER` (a job over sooner goes
        # straight to its final status), while it runs; the job is killed if the server
        # refuses it. Later reports wait for the answer, but for the final status: a job
        # over before the answer came posts it at once, on another connection, and a
        # `running` it overtakes is refused (403) or crossed (409), which changes nothing.
        # The spare copy of the job's code for the next job of this code is made from then
        # too: not while this job (or the one before, tidying up) starts.
        self._running = running = Background(
            lambda: self._report_running(handle, host_ports), name="status-post"
        )
        self._sync = self._artifact_sync(paths).start()
        probe = self._probe_apps(host_ports, running)
        try:
            result = handle.wait()
            self._exited.set()
        finally:
            if probe is not None:
                probe.stop()
        return self._final(result)

    def _running_accepted(self) -> bool:
        """False when the server refused the `running` report (the job is not ours)."""
        return self._running is None or self._running.result()

    def _running_refused(self) -> bool:
        """Whether the server refused the `running` report. One still in flight is not
        waited for: the final status goes out at once, and a refusal would refuse it too."""
        running = self._running
        return running is not None and running.done() and not running.result()

    def _report_running(self, handle: JobHandle, host_ports: list[int]) -> bool:
        exited = self._exited.wait(_RUNNING_AFTER)
        if self._checkouts is not None:  # the next job of this code: a copy made meanwhile
            self._checkouts.prepare(self.assignment.repo)
        if exited:  # over already: its final status is all it reports
            return True
        if self._post(JobStatusUpdate(status=JobStatus.RUNNING, host_ports=host_ports)):
            return True
        handle.kill()
        return False

    def _has_inputs(self) -> bool:
        assignment = self.assignment
        return bool(assignment.deps or assignment.caches or assignment.resume)

    def _nothing_to_download(self) -> bool:
        if self._has_inputs() or self._checkouts is None:
            return False
        return self._checkouts.has(self.assignment.repo)

    def _post_downloading(self) -> bool:
        return self._post(JobStatusUpdate(status=JobStatus.DOWNLOADING))

    def _probe_apps(self, host_ports: list[int], running: Background[bool]) -> AppProbe | None:
        """Start probing the job's apps once the server has it running (it ignores an
        apps-ready report about a job in another status); when they all answer, tell it."""
        targets = probe_targets(self.assignment.spec, host_ports)
        if not targets or not running.result():
            return None
        return AppProbe(targets, self._report_apps_ready).start()

    def _report_apps_ready(self) -> None:
        """Best effort, a few tries: a lost report only keeps the CLI waiting, and a refusal
        (the job moved on meanwhile) must not make the runner forget a job still running."""
        update = JobStatusUpdate(status=JobStatus.RUNNING, apps_ready=True)
        pause = self._settings.retry_backoff
        for _ in range(3):
            if self._cancelled() or self._shutdown.is_set():
                return
            try:
                self._api.post_status(self.job_id, update)
                return
            except (ConflictError, NotFoundError):
                return
            except DstackError as exc:
                log.warning("reporting the apps of job %s as ready failed: %s", self.job_id, exc)
                self._shutdown.wait(pause)
                pause = min(pause * 2, self._settings.retry_backoff_max)

    def _paths(self, code_dir: Path) -> JobPaths:
        spec, assignment = self.assignment.spec, self.assignment
        declared = [a.path for a in spec.artifacts] + spec.cache
        declared += [m.path for dep in assignment.deps for m in dep.manifests]
        declared += [c.path for c in assignment.caches]
        paths = job_paths(
            declared,
            job_dir=self.job_dir,
            working_dir=code_dir / spec.working_dir,
            executor=self._executor.name,
        )
        paths.prepare()
        return paths

    def _blob_store(self) -> BlobStore:
        """The job's store, opened on first use: jobs without artifacts never need one."""
        if self._store is None:
            self._store = self._open_store(self.assignment.storage)
        return self._store

    def _local_store(self) -> BlobStore | None:
        """The job's store when it is the server's own folder (where the code blobs are)."""
        if self.assignment.storage.kind != "local":
            return None
        try:
            store = self._blob_store()
        except (DstackError, OSError):
            return None  # the code then comes over HTTP, as it would without a local store
        return store if is_local(store) else None

    def _close_store(self) -> None:
        if self._store is not None:  # HTTP stores hold a connection pool
            self._store.close()

    def _artifact_sync(self, paths: JobPaths) -> ArtifactSync:
        return ArtifactSync(
            spec=self.assignment.spec,
            paths=paths,
            store=self._blob_store(),
            settings=self._settings,
            post_artifact=lambda manifest: self._post_manifest(self._api.post_artifacts, manifest),
            post_cache=lambda manifest: self._post_manifest(self._api.post_cache, manifest),
            journal=self._held,
        )

    def _post_manifest(self, post: Callable[[str, Manifest], None], manifest: Manifest) -> None:
        """Post a manifest, waiting for a server that is away (its files may have been moved
        out of the job's folder already); an answer that refuses it is raised at once, and
        so is the last error once the runner shuts down (the journal keeps the manifest)."""
        post_manifest(post, self.job_id, manifest, shutdown=self._shutdown, settings=self._settings)

    def _upload(self, update: JobStatusUpdate | None, spool: LogSpool) -> JobStatusUpdate | None:
        """The final artifact sync, once the job's processes are gone; the status to report.

        Runs for every end (done, failed, stopped, aborted, a crashed worker); workflow caches
        are saved unless the job was aborted. A failed upload fails a job that was done.
        """
        sync = self._sync
        if sync is None:
            return update
        sync.stop()
        caches = update is not None and update.status is not JobStatus.ABORTED
        if update is None or not sync.has_work(caches=caches):
            return update
        # `uploading` is posted (after `running` was accepted) while the sync runs; the
        # final status waits for its answer.
        uploading = Background(
            lambda: (
                self._running_accepted() and self._post(JobStatusUpdate(status=JobStatus.UPLOADING))
            ),
            name="status-post",
        )
        move = is_local(self._blob_store()) and not self._settings.keep_job_dirs
        try:
            sync.finish(move=move, caches=caches, say=spool.write_line, warn=spool.say_error)
        except (DstackError, OSError) as exc:
            if not uploading.result():
                return None
            spool.say_error(f"error: cannot upload the artifacts: {exc}")
            return _upload_failed(update, exc)
        return update if uploading.result() else None

    def _context(
        self, spool: LogSpool, code_dir: Path, paths: JobPaths, host_ports: list[int]
    ) -> JobLaunch:
        env = job_env(self.assignment, host_ports)
        # Where apps listen: a container's own interface (Docker publishes it on the host's
        # 127.0.0.1), or the host's loopback for a plain process, so that no app is reachable
        # from the network. The runner's probe and tunnel dial 127.0.0.1 either way.
        env["DSTACK_APP_HOST"] = "127.0.0.1" if self._executor.name == "process" else "0.0.0.0"
        if self._executor.name == "process":
            env.update(gpu_env(self.assignment.gpu_indexes))
        if paths.home is not None:
            env.setdefault("HOME", str(paths.home))
        return JobLaunch(
            job_id=self.job_id,
            run_name=self.assignment.run_name,
            spec=with_secret_references(self.assignment.spec, self.assignment.secrets),
            job_dir=self.job_dir,
            code_dir=code_dir,
            env=env,
            output=spool.write,
            notice=spool.write_line,
            host_ports=host_ports,
            gpu_indexes=list(self.assignment.gpu_indexes),
            mounts=dict(paths.mounts),
        )

    def _attach(self, handle: JobHandle) -> None:
        """Remember the handle, then apply a stop/abort that came during the start."""
        pid = getattr(handle, "pid", None)
        if isinstance(pid, int) and self._held is not None:
            self._held.note_process(pid)
        with self._lock:
            self._handle = handle
            stop, abort = self._stop_requested, self._abort_requested
        if abort:
            handle.kill()
        elif stop:
            threading.Thread(
                target=handle.stop, args=(self._settings.stop_grace,), daemon=True
            ).start()
        self.launched.set()

    def _cancelled(self) -> bool:
        with self._lock:
            return self._stop_requested or self._abort_requested or self._interruption is not None

    def _final(self, result: ExitResult | None) -> JobStatusUpdate | None:
        with self._lock:
            forgotten, abort, stop = self._forgotten, self._abort_requested, self._stop_requested
            interruption = self._interruption
        exit_code = result.exit_code if result else None
        if forgotten:
            return None
        if abort:
            return JobStatusUpdate(
                status=JobStatus.ABORTED,
                reason=TerminationReason.ABORTED_BY_USER,
                exit_code=exit_code,
            )
        if interruption is not None:
            return JobStatusUpdate(
                status=JobStatus.FAILED,
                reason=TerminationReason.INTERRUPTED,
                exit_code=exit_code,
                message=interruption,
            )
        if stop:
            return JobStatusUpdate(
                status=JobStatus.STOPPED,
                reason=TerminationReason.STOPPED_BY_USER,
                exit_code=exit_code,
            )
        assert result is not None
        return _from_exit(result)

    def _finish(self, update: JobStatusUpdate | None, shipper: LogShipper) -> JobWorker | None:
        """Ship every line, then post the final status (unless the job was forgotten); the
        worker of the next job, when its answer carried one."""
        with self._lock:
            forgotten = self._forgotten
        if update is None or forgotten:
            shipper.abandon()
            return None
        while not shipper.drain(timeout=1.0):
            with self._lock:
                forgotten = self._forgotten
            if forgotten:
                shipper.abandon()
                return None
        self.final = update
        pause_point("final", self.job_id)
        with self._lock:
            interrupted = self._interruption is not None
            self._final_out = True
        if self._next_job is None or interrupted or self._shutdown.is_set():
            self._post(update, final=True)
            return None
        self._post(update.model_copy(update={"next_job": True}), final=True)
        handed, self._handed = self._handed, None
        return None if handed is None else self._next_job(handed)

    def _post(self, update: JobStatusUpdate, *, final: bool = False) -> bool:
        """Post a status; False when the server says the job is no longer this runner's.

        Other failures are retried with backoff: a final status must not be lost because
        the server restarts; an intermediate one is dropped when the runner shuts down. A
        final status that met a change of the job (409: the `running` report it overtook,
        on another connection) is posted again; an intermediate one refused once the final
        status is out was overtaken by it, and changes nothing.
        """
        pause = self._settings.retry_backoff
        crossed = 0
        while True:
            try:
                answer = self._api.post_status(self.job_id, update)
                if answer is not None:  # a final status's answer: the runner's next job
                    self._handed = answer
                return True
            except (ConflictError, NotFoundError) as exc:
                with self._lock:
                    overtaken = not final and self._final_out
                if overtaken:
                    return True
                if final and _changed_meanwhile(exc) and crossed < _CROSSED_MAX:
                    crossed += 1
                    continue
                log.warning("job %s is no longer this runner's: %s", self.job_id, exc)
                with self._lock:
                    self._forgotten = True
                return False
            except DstackError as exc:
                log.warning("posting %s of job %s failed: %s", update.status, self.job_id, exc)
                if not final and self._shutdown.is_set():
                    return True
                if final:
                    time.sleep(pause)
                else:
                    self._shutdown.wait(pause)
                pause = min(pause * 2, self._settings.retry_backoff_max)

    def _send_logs(self, lines: list[LogLine]) -> None:
        self._api.post_logs(self.job_id, LogBatch.model_construct(lines=lines))


def _changed_meanwhile(exc: DstackError) -> bool:
    """409: the job changed while the report was applied (not a refusal: 403, 404)."""
    return isinstance(exc, ConflictError) and not isinstance(exc, ForbiddenError)


def post_manifest(
    post: Callable[[str, Manifest], None],
    job_id: str,
    manifest: Manifest,
    *,
    shutdown: threading.Event,
    settings: RunnerSettings,
) -> None:
    """`post(job_id, manifest)`, again with backoff while the server is unreachable (until
    `shutdown`); any other error is raised at once."""
    pause = settings.retry_backoff
    while True:
        try:
            post(job_id, manifest)
            return
        except ServerUnreachableError as exc:
            if shutdown.is_set():
                raise
            log.warning("posting manifest %s of job %s failed: %s", manifest.path, job_id, exc)
            shutdown.wait(pause)
            pause = min(pause * 2, settings.retry_backoff_max)


def _from_exit(result: ExitResult) -> JobStatusUpdate:
    if result.reason is TerminationReason.DONE:
        return JobStatusUpdate(status=JobStatus.DONE, reason=TerminationReason.DONE, exit_code=0)
    message = (
        "the job ran out of memory (OOM-killed)"
        if result.oom
        else f"exited with code {result.exit_code}"
    )
    return JobStatusUpdate(
        status=JobStatus.FAILED, reason=result.reason, exit_code=result.exit_code, message=message
    )


def _failed(reason: TerminationReason, message: str) -> JobStatusUpdate:
    return JobStatusUpdate(status=JobStatus.FAILED, reason=reason, message=message)


def _upload_failed(update: JobStatusUpdate | None, exc: Exception) -> JobStatusUpdate | None:
    """A job that was done fails when its artifacts could not be stored; others keep their end."""
    if update is None or update.status is not JobStatus.DONE:
        return update
    if is_no_space(exc):
        return _failed(TerminationReason.DISK_FULL, f"cannot upload the artifacts: {exc}")
    return _failed(TerminationReason.EXECUTOR_ERROR, f"cannot upload the artifacts: {exc}")


def _failed_by(exc: BaseException, job_dir: Path, what: str) -> JobStatusUpdate:
    """A job failed by an error of the runner: `disk_full` when a disk was full, naming it."""
    if not is_no_space(exc):
        return _failed(TerminationReason.EXECUTOR_ERROR, f"{what}: {exc}")
    filename = getattr(exc, "filename", None)
    space = disk_space(Path(filename) if filename else job_dir)
    message = f"{what}: no space left on device in {space.path} ({space.describe()}): {exc}"
    return _failed(TerminationReason.DISK_FULL, message)


_DISK_SUSPECTS = frozenset({TerminationReason.EXIT_CODE, TerminationReason.EXECUTOR_ERROR})


def _disk_verdict(update: JobStatusUpdate | None, job_dir: Path) -> JobStatusUpdate | None:
    """A job that failed while its folder's disk is full failed of it (a write of the job
    met ENOSPC, or the runner's did): `disk_full`, naming the folder and its space."""
    if update is None or update.status is not JobStatus.FAILED:
        return update
    if update.reason not in _DISK_SUSPECTS:
        return update
    space = disk_space(job_dir)
    if not space.full:
        return update
    message = (
        f"no space left on device in {job_dir} ({space.describe()}); "
        f"{update.message or 'the job failed'}"
    )
    return update.model_copy(update={"reason": TerminationReason.DISK_FULL, "message": message})


def _lost_output_verdict(update: JobStatusUpdate | None, spool: LogSpool) -> JobStatusUpdate | None:
    """Output the spool could not keep fails a job that was done: its log is part of its
    result. A job that failed of another cause keeps that cause, told of the loss too."""
    if update is None or not spool.lost or update.status not in _LOSS_FAILS:
        return update
    cause = spool.write_error
    space = disk_space(spool.path)
    message = (
        f"{spool.lost} bytes of the job's output were lost: cannot write {spool.path} "
        f"({cause.strerror if cause and cause.strerror else cause}; {space.describe()})"
    )
    if update.status is JobStatus.FAILED and update.reason is not TerminationReason.EXIT_CODE:
        return update.model_copy(update={"message": f"{update.message}; {message}"})
    reason = TerminationReason.DISK_FULL if cause and is_no_space(cause) else None
    if update.status is JobStatus.FAILED:  # exited non-zero: the full disk likely did it
        message = f"{message}; {update.message}"
    return update.model_copy(
        update={
            "status": JobStatus.FAILED,
            "reason": reason or TerminationReason.EXECUTOR_ERROR,
            "message": message,
        }
    )


_LOSS_FAILS = frozenset({JobStatus.DONE, JobStatus.FAILED})
