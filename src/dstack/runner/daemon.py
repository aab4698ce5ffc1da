"""The runner daemon: register, heartbeat, claim jobs and run them concurrently.

The server decides what fits on this machine; the runner claims again as soon as it got a
job and runs each on its own `JobWorker` thread. Heartbeat answers stop, abort or forget jobs.

Registration: the registration token only registers. The runner's own credential from the
answer is stored (`<work_dir>/credential.json`, 0600) and carries every later request; a
restarted runner registers with it as the same runner, and falls back to the registration
token once when the server refuses it (revoked, or the server lost its database).

Spot interruptions: with a metadata URL (`RunnerSettings.metadata_url`) an
`InterruptionWatcher` polls the instance metadata service; on a notice the runner claims no
more jobs and interrupts each job it holds (`JobWorker.request_interrupt`: artifacts synced,
logs shipped, the job stopped and reported `interrupted`, which the server re-queues).

Recovery: the jobs an earlier run of this runner held (on this work dir) are finished first
(`dstack.runner.recovery`): listed in the heartbeats while their folders are synced, then
reported. Only one runner uses a work dir at a time (`dstack.runner.lock`).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

from dstack.api.runner import InstanceMetadataClient, RunnerApi
from dstack.errors import AuthError, DstackError, NotFoundError
from dstack.models.protocol import (
    HeartbeatRequest,
    HeartbeatResponse,
    JobAssignment,
    RegisterRunnerRequest,
    RegisterRunnerResponse,
)
from dstack.models.resources import HostResources
from dstack.models.runner import SpotNotice
from dstack.runner.address import route_source
from dstack.runner.blobs import BlobStoreFactory, open_blob_store
from dstack.runner.checkouts import CheckoutCache
from dstack.runner.credential import StoredCredential, load_credential, save_credential
from dstack.runner.executors import Executor, RunnerIdentity, create_executor
from dstack.runner.held import HeldJob, HeldJobs
from dstack.runner.interruption import InterruptionWatcher, MetadataSource
from dstack.runner.job import JobWorker
from dstack.runner.lock import WorkDirLock
from dstack.runner.ports import JobPorts, PortRecorder
from dstack.runner.recovery import Recovery
from dstack.runner.resources import detect_resources, free_disk_mib
from dstack.runner.settings import RunnerSettings
from dstack.runner.trash import Trash
from dstack.runner.tunnel import PortCheck, TunnelAgent

log = logging.getLogger(__name__)

_T = TypeVar("_T")
ExecutorFactory = Callable[[RunnerSettings], Executor]


_CLAIM_WAIT_MAX = 60.0  # `ClaimRequest.wait_seconds` allows no more


class Closeable(Protocol):
    def close(self) -> None: ...


TunnelFactory = Callable[[RunnerSettings, str, str, PortCheck], Closeable]
"""`(settings, runner_id, credential, allowed)` → the started tunnel."""


def start_tunnel_agent(
    settings: RunnerSettings, runner_id: str, credential: str, allowed: PortCheck
) -> Closeable:
    """The app tunnel of this runner (`dstack.runner.tunnel`), connecting in the background
    with the runner's own credential. A local runner's control connection (to a server on
    this machine, which closes it if it goes away) sends no keepalive pings: they woke both
    processes every 20 s while nothing happened."""
    ping = None if settings.server_file is not None else 20.0
    agent = TunnelAgent(
        settings.server_url, credential, runner_id, allowed=allowed, ping_interval=ping
    )
    return agent.start()


class Runner:
    """One runner. `run()` blocks until `shutdown()` (from a signal handler or another thread).

    `AuthError` from the server ends `run()` with that error: a bad token will not heal.
    `blob_store` opens the blob store a job's `StorageAccess` names (default:
    `open_blob_store`: the server's folder when this runner can write it, else the server's
    store through `api`, with the runner's credential).
    `tunnel` starts the app tunnel once registered (None: no tunnel); it is closed on exit.
    `metadata` is the instance metadata service watched for spot interruptions (default: an
    `InstanceMetadataClient` of `settings.metadata_url`; none without one).
    """

    def __init__(
        self,
        settings: RunnerSettings,
        api: RunnerApi,
        executor_factory: ExecutorFactory = create_executor,
        *,
        resources: Callable[[], HostResources] | None = None,
        blob_store: BlobStoreFactory | None = None,
        tunnel: TunnelFactory | None = start_tunnel_agent,
        metadata: MetadataSource | None = None,
    ) -> None:
        self.settings = settings
        self._metadata = metadata
        self.interruption: SpotNotice | None = None
        """The spot interruption notice, once one came: no job is claimed after it."""
        self._tunnel_factory = tunnel
        self._tunnel: Closeable | None = None
        # Host ports of the running jobs, noted from their reports: what the tunnel may dial.
        self._ports = JobPorts()
        self._api = api
        self._blob_store = blob_store or (lambda access: open_blob_store(access, api))
        self._executor_factory = executor_factory
        self._resources = resources or (
            lambda: detect_resources(
                settings.jobs_dir, min_free_disk_mib=settings.min_free_disk_mib
            )
        )
        self._executor: Executor | None = None
        self._checkouts = (
            CheckoutCache(
                settings.checkouts_dir, keep=settings.checkouts_kept, spares=settings.spares_dir
            )
            if settings.checkouts_kept > 0
            else None
        )
        self._shutdown = threading.Event()
        self._beat = threading.Event()  # ends the heartbeat loop's pause early
        # The server's pace for an idle runner, from its last heartbeat answer.
        self._idle_interval: float | None = None
        self._workers: dict[str, JobWorker] = {}
        self._held = HeldJobs(settings.work_dir)
        self._trash = Trash(settings.jobs_dir / ".trash")
        self._recovering: set[str] = set()
        self._contact = time.monotonic()
        self._lock = threading.Lock()
        self._fatal: DstackError | None = None
        self.runner_id: str | None = None

    def run(self) -> None:
        """Register, then claim and run jobs until shutdown; running jobs are then stopped."""
        self.settings.create_dirs()
        lock = WorkDirLock(self.settings.lock_path).acquire()
        self._trash.empty_later()
        try:
            self._run()
        finally:
            lock.release()
        if self._fatal is not None:
            raise self._fatal

    def _run(self) -> None:
        self._executor = self._executor_factory(self.settings)
        try:
            self._register()
            self._start_tunnel()
            self._watch_interruptions()
            heartbeat = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
            heartbeat.start()
            # The claim long-poll (and its retries while the server is away) may block for
            # many seconds: it runs in a daemon thread so that shutdown never waits for it.
            claims = threading.Thread(target=self._claim_thread, name="claims", daemon=True)
            claims.start()
            self._shutdown.wait()
        except AuthError as exc:
            self._fatal = exc
        finally:
            self.shutdown()
            if self._tunnel is not None:
                self._tunnel.close()
            self._stop_all()

    def _watch_interruptions(self) -> None:
        source = self._metadata
        if source is None and self.settings.metadata_url:
            source = InstanceMetadataClient(self.settings.metadata_url)
        if source is None:
            return
        log.info("watching for spot interruption notices at %s", self.settings.metadata_url)
        InterruptionWatcher(
            source,
            self._interrupt,
            interval=self.settings.metadata_interval,
            shutdown=self._shutdown,
        ).start()

    def _interrupt(self, notice: SpotNotice) -> None:
        """The instance is being reclaimed: claim nothing more, interrupt every job here."""
        with self._lock:
            self.interruption = notice
            workers = [w for w in self._workers.values() if w.is_alive()]
        for worker in workers:
            worker.request_interrupt(notice.describe())

    def shutdown(self) -> None:
        """Ask `run()` to stop claiming, stop the running jobs and return. Never blocks."""
        self._shutdown.set()
        self._beat.set()

    def running_job_ids(self) -> list[str]:
        """The jobs running here, and those being recovered."""
        with self._lock:
            alive = [job_id for job_id, w in self._workers.items() if w.is_alive()]
            return alive + sorted(self._recovering - set(alive))

    def last_contact(self) -> float:
        """`time.monotonic()` when the server last answered a heartbeat or registration."""
        return self._contact

    def is_idle(self) -> bool:
        """No job runs or is being recovered here."""
        return not self.running_job_ids()

    def worker(self, job_id: str) -> JobWorker | None:
        with self._lock:
            return self._workers.get(job_id)

    def tunnel_allows(self, job_id: str, port: int) -> bool:
        """Whether `port` is a host port of job `job_id`, running here now."""
        worker = self.worker(job_id)
        return worker is not None and worker.is_alive() and self._ports.has(job_id, port)

    def _start_tunnel(self) -> None:
        if self._tunnel_factory is not None and self.runner_id is not None:
            credential = self._api.credential
            self._tunnel = self._tunnel_factory(
                self.settings, self.runner_id, credential, self.tunnel_allows
            )

    def _register(self) -> None:
        """Register (see the module's docstring), store a new credential, then let the
        executor clean up after earlier runs of this same runner."""
        request = RegisterRunnerRequest(
            name=self.settings.name,
            host=socket.gethostname(),
            address=self.settings.address or route_source(self.settings.server_url),
            resources=self._resources(),
            executors=[self._executor.name if self._executor else "process"],
            labels=dict(self.settings.labels),
        )
        answer = self._retrying(lambda: self._sign_in(request))
        self._contact = time.monotonic()
        self.runner_id = answer.runner_id
        if answer.runner_token is not None:
            credential = StoredCredential(
                server_url=self.settings.server_url,
                runner_id=answer.runner_id,
                runner_token=answer.runner_token,
            )
            save_credential(self.settings.credential_path, credential)
        log.info("registered as %s (%s)", self.settings.name, self.runner_id)
        if self._executor is not None:
            with self._lock:
                owned = set(self._workers)
            owner = RunnerIdentity(runner_id=answer.runner_id, server_id=answer.server_id)
            self._executor.reconcile(owner, owned_job_ids=owned)

    def _sign_in(self, request: RegisterRunnerRequest) -> RegisterRunnerResponse:
        """Register with the stored credential of this server when there is one, else (or
        when the server refuses it) with the registration token."""
        stored = load_credential(self.settings.credential_path, self.settings.server_url)
        if stored is not None:
            try:
                return self._api.register(request, credential=stored.runner_token)
            except AuthError:
                log.warning(
                    "the server refused the stored credential of runner %s (revoked, or a new "
                    "server database); registering with the registration token",
                    stored.runner_id,
                )
        return self._api.register(request)

    def _claim_thread(self) -> None:
        try:
            self._recover_held()
            self._claim_loop()
        except AuthError as exc:
            self._fatal = exc
        except DstackError as exc:
            if not self._shutdown.is_set():
                self._fatal = exc
        finally:
            self._shutdown.set()

    def _claim_loop(self) -> None:
        while not self._shutdown.is_set():
            if self.interruption is not None:  # the machine is going away: take nothing
                self._shutdown.wait(self.settings.claim_wait)
                continue
            try:
                assignment = self._api.claim(self._claim_wait())
                self._contact = time.monotonic()
            except NotFoundError:
                self._register()
                continue
            except AuthError:
                raise
            except DstackError as exc:
                log.warning("claiming a job failed: %s", exc)
                self._shutdown.wait(self.settings.retry_backoff)
                continue
            if assignment is not None:
                self._start_worker(assignment)

    def _claim_wait(self) -> float:
        """`claim_wait`; while no job runs here, as long as the server's idle pace allows
        (`HeartbeatResponse.idle_interval`, at most a minute): its waiting claim is what
        tells the server this runner is alive then."""
        idle = self._idle_interval
        if idle is None or self.running_job_ids():
            return self.settings.claim_wait
        return max(self.settings.claim_wait, min(idle, _CLAIM_WAIT_MAX))

    def _recover_held(self) -> None:
        """Start finishing, each on its own thread, the jobs an earlier run held."""
        assert self._executor is not None
        for held in self._held.all():
            recovery = Recovery(
                held,
                settings=self.settings,
                api=self._api,
                executor=self._executor.name,
                blob_store=self._blob_store,
                shutdown=self._shutdown,
            )
            with self._lock:
                self._recovering.add(held.job_id)
            log.info("recovering job %s, held before this runner restarted", held.job_id)
            name = f"recover-{held.job_id}"
            threading.Thread(target=self._recover, args=(recovery,), name=name, daemon=True).start()

    def _recover(self, recovery: Recovery) -> None:
        try:
            recovery.run()
        except Exception:  # a bug must not keep the job listed forever
            log.exception("recovering job %s failed", recovery.job_id)
        finally:
            with self._lock:
                self._recovering.discard(recovery.job_id)

    def _hold(self, assignment: JobAssignment) -> HeldJob | None:
        """The job's record; None when it cannot be written (the job runs without one)."""
        try:
            return self._held.hold(assignment)
        except OSError as exc:
            log.warning("cannot keep a record of job %s: %s", assignment.job_id, exc)
            return None

    def _start_worker(self, assignment: JobAssignment) -> JobWorker | None:
        """Run the job on a worker of its own; the worker (None: it runs here already)."""
        assert self._executor is not None
        with self._lock:
            existing = self._workers.get(assignment.job_id)
            if existing is not None and existing.is_alive():
                return None  # a claim answered twice; the job already runs here
            worker = JobWorker(
                assignment,
                settings=self.settings,
                api=PortRecorder(self._api, self._ports).as_api(),
                executor=self._executor,
                shutdown=self._shutdown,
                blob_store=self._blob_store,
                checkouts=self._checkouts,
                held=self._hold(assignment),
                trash=self._trash,
                next_job=self._start_worker,
            )
            self._workers[assignment.job_id] = worker
            notice = self.interruption
        log.info("running job %s of run %s", assignment.job_id, assignment.run_name)
        worker.start()
        self._beat.set()  # heartbeats at the busy pace from now on (see `_heartbeat_loop`)
        if notice is not None:  # claimed while the notice came: it goes back at once
            worker.request_interrupt(notice.describe())
        return worker

    def _heartbeat_loop(self) -> None:
        """A heartbeat every `heartbeat_interval` while a job runs or is recovered; while
        none does, as rarely as the server allows (`HeartbeatResponse.idle_interval`), so
        that an idle runner and its server do not wake each other every second. A job
        starting (`_beat`) cuts an idle pause short."""
        pause = self.settings.heartbeat_interval
        last = time.monotonic()
        while True:
            while (left := last + pause - time.monotonic()) > 0 and not self._shutdown.is_set():
                if self._beat.wait(left):  # a job started: the busy pace from the last beat
                    self._beat.clear()
                    pause = self.settings.heartbeat_interval
            if self._shutdown.is_set():
                return
            last = time.monotonic()
            self._prune_workers()
            pause = self.settings.heartbeat_interval
            try:
                running = self.running_job_ids()
                request = HeartbeatRequest(
                    running_jobs=running,
                    disk_free_mib=free_disk_mib(self.settings.jobs_dir),
                )
                answer = self._api.heartbeat(request)
                self._apply(answer)
                self._contact = time.monotonic()
                log.debug("heartbeat sent (%d running jobs)", len(request.running_jobs))
                self._idle_interval = answer.idle_interval
                if not running and not self.running_job_ids() and answer.idle_interval:
                    pause = max(pause, answer.idle_interval)
            except NotFoundError:
                self._register_quietly()
            except AuthError as exc:
                self._fatal = exc
                self._shutdown.set()
            except DstackError as exc:
                log.warning("heartbeat failed: %s", exc)

    def _apply(self, answer: HeartbeatResponse) -> None:
        for job_id in answer.stop_jobs:
            self._each_worker(job_id, JobWorker.request_stop)
        for job_id in answer.abort_jobs:
            self._each_worker(job_id, JobWorker.request_abort)
        for job_id in answer.forget_jobs:
            self._each_worker(job_id, JobWorker.forget)

    def _each_worker(self, job_id: str, action: Callable[[JobWorker], None]) -> None:
        worker = self.worker(job_id)
        if worker is not None and worker.is_alive():
            action(worker)

    def _prune_workers(self) -> None:
        with self._lock:
            # Not one being started (`_start_worker` adds it first): it is not alive yet.
            ended = [j for j, w in self._workers.items() if w.ended()]
            for job_id in ended:
                del self._workers[job_id]
                # A `running` report answered after the final status noted its ports again.
                self._ports.forget(job_id)

    def _register_quietly(self) -> None:
        try:
            self._register()
        except DstackError as exc:
            log.warning("registering again failed: %s", exc)

    def _retrying(self, call: Callable[[], _T]) -> _T:
        """`call()` until it succeeds, with backoff; `AuthError` and shutdown end it."""
        pause = self.settings.retry_backoff
        while True:
            try:
                return call()
            except AuthError:
                raise
            except DstackError as exc:
                if self._shutdown.is_set():
                    raise
                log.warning("the server is not available (%s); retrying in %.0fs", exc, pause)
                self._shutdown.wait(pause)
                pause = min(pause * 2, self.settings.retry_backoff_max)

    def _stop_all(self) -> None:
        with self._lock:
            workers = list(self._workers.values())
        for worker in workers:
            worker.request_stop()
        for worker in workers:
            worker.join(self.settings.stop_grace + 10)
