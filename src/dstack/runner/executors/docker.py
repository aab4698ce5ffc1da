"""Runs jobs in Docker containers (docker SDK, engine API 1.41).

The job's code is bind-mounted at `/workflow`; the container runs under Docker's init with
`TINI_KILL_PROCESS_GROUP=1`, so a stop's SIGTERM reaches the job's processes, not just bash.
Ports are published on 127.0.0.1 with the same number inside and out (`$PORT_0`). Absolute
and `~` artifact and cache paths are host folders of the job bound into the container
(`JobLaunch.mounts`, see `dstack.runner.paths`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import posixpath
import threading
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, DockerException, ImageNotFound
from docker.types import DeviceRequest
from docker.utils import parse_repository_tag

from dstack.errors import ExecutorError
from dstack.models.job import JobSpec, TerminationReason
from dstack.models.logs import JOB_STREAMS, LogStream
from dstack.providers.images import ImageSettings, resolve_image
from dstack.runner.errors import JobStartError
from dstack.runner.executors.base import (
    ExitResult,
    JobLaunch,
    OutputSink,
    RunnerIdentity,
    script_of,
)
from dstack.settings import DEFAULT_IMAGE, EXECUTOR

CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
RUNNER_ID_LABEL = "dstack.runner-id"
SERVER_ID_LABEL = "dstack.server-id"
JOB_LABEL = "dstack.job"
log = logging.getLogger(__name__)

_LOG_JOIN_TIMEOUT = 10.0


def docker_client(*, required: bool, timeout: float = 3.0) -> Any | None:
    """A client of the local engine when it answers a ping within `timeout` seconds.

    None when it does not; with `required`, an `ExecutorError` saying what to do instead.
    """
    try:
        client = docker.from_env(timeout=math.ceil(timeout))
        client.ping()
    except Exception as exc:  # the SDK raises DockerException, requests' and OS errors alike
        if required:
            raise ExecutorError(
                f"no Docker engine answers: {exc}",
                "start dockerd, or run the runner with --executor process",
            ) from exc
        return None
    # Pings are quick; container waits and pulls are not: no client-wide timeout from here on.
    client.api.timeout = None
    return client


class DockerExecutor:
    """`Executor` running each job in its own container, labelled with its job, its runner's
    id and its server's id (`RunnerIdentity`, set by `reconcile` once registered)."""

    name = "docker"

    def __init__(
        self,
        client: Any,
        *,
        images: ImageSettings | None = None,
        ca_bundle: Path = CA_BUNDLE,
    ) -> None:
        self._client = client
        self._owner: RunnerIdentity | None = None
        self._images = images or ImageSettings()
        self._ca_bundle = ca_bundle

    def start(self, job: JobLaunch) -> DockerHandle:
        image = resolve_image(job.spec, self._images)
        self._ensure_image(image, job)
        job.working_dir.mkdir(parents=True, exist_ok=True)
        try:
            container = self._client.containers.create(image, **self._create_args(job))
            handle = DockerHandle(container, job.output)
            container.start()
        except DockerException as exc:
            raise JobStartError(
                f"cannot start a container of {image} for workflow '{job.label}': {_explain(exc)}"
            ) from exc
        handle.follow()
        return handle

    def reconcile(self, owner: RunnerIdentity, owned_job_ids: set[str]) -> None:
        self._owner = owner
        labels = _owner_labels(owner)
        wanted = [f"{key}={value}" for key, value in labels.items()]
        for container in self._client.containers.list(all=True, filters={"label": wanted}):
            mine = all(container.labels.get(k) == v for k, v in labels.items())
            if not mine or container.labels.get(JOB_LABEL) in owned_job_ids:
                continue
            # Gone already, or the engine removes it anyway.
            with contextlib.suppress(DockerException):
                container.remove(force=True)

    def _create_args(self, job: JobLaunch) -> dict[str, Any]:
        spec = job.spec
        args: dict[str, Any] = {
            "environment": {**job.env, "TINI_KILL_PROCESS_GROUP": "1"},
            "working_dir": posixpath.normpath(posixpath.join("/workflow", spec.working_dir)),
            "volumes": self._volumes(job),
            "labels": {**_owner_labels(self._registered()), JOB_LABEL: job.job_id},
            "ports": {f"{port}/tcp": ("127.0.0.1", port) for port in job.host_ports},
            "init": True,
            "detach": True,
            **_limits(spec, job.gpu_indexes),
        }
        if spec.resources.nodes > 1:
            # The nodes of a multi-node run reach each other at their runners' addresses
            # (MASTER_ADDR:MASTER_PORT): the container shares the host's network, where its
            # ports are the host's own (nothing to publish).
            args["network_mode"] = "host"
            del args["ports"]
        if spec.commands:
            args["entrypoint"] = list(spec.entrypoint or ["bash", "-c"])
            args["command"] = [script_of(spec.commands)]
        elif spec.entrypoint:
            args["entrypoint"] = list(spec.entrypoint)
        return args

    @property
    def owner(self) -> RunnerIdentity | None:
        """Whose containers this executor starts and reconciles (None before `reconcile`)."""
        return self._owner

    def _registered(self) -> RunnerIdentity:
        if self._owner is None:
            raise RuntimeError("reconcile() first: containers are labelled with their owner")
        return self._owner

    def _volumes(self, job: JobLaunch) -> dict[str, dict[str, str]]:
        volumes = {str(job.code_dir.resolve()): {"bind": "/workflow", "mode": "rw"}}
        if self._ca_bundle.is_file():
            volumes[str(self._ca_bundle)] = {"bind": str(CA_BUNDLE), "mode": "ro"}
        for host, container in job.mounts.items():
            host.mkdir(parents=True, exist_ok=True)
            volumes[str(host.resolve())] = {"bind": container, "mode": "rw"}
        return volumes

    def _ensure_image(self, image: str, job: JobLaunch) -> None:
        """Use a local image as it is; pull a missing one, reporting progress to the log."""
        try:
            self._client.images.get(image)
            return
        except ImageNotFound:
            pass
        except DockerException as exc:
            raise JobStartError(f"cannot inspect image {image}: {_explain(exc)}") from exc
        job.notice(f"pulling image {image}")
        try:
            self._pull(image, job)
        except DockerException as exc:
            raise JobStartError(
                f"cannot pull image {image} for workflow '{job.label}': {_explain(exc)}",
                _pull_hint(job),
                reason=TerminationReason.IMAGE_PULL,
            ) from exc

    def _pull(self, image: str, job: JobLaunch) -> None:
        repository, tag = parse_repository_tag(image)
        last: dict[str, str] = {}
        for event in self._client.api.pull(
            repository, tag=tag or "latest", stream=True, decode=True
        ):
            if "error" in event:
                raise APIError(str(event["error"]))
            layer, status = str(event.get("id", "")), str(event.get("status", ""))
            if status and last.get(layer) != status:  # progress bars repeat; statuses do not
                last[layer] = status
                job.notice(f"{layer}: {status}" if layer else status)


def _pull_hint(job: JobLaunch) -> str:
    """What to do when an image cannot be pulled; a job that names no image (the default
    one) can run without Docker at all."""
    hint = "check the image name and that this machine can reach its registry"
    if job.spec.image:
        return hint
    return (
        f"{hint}; or run without Docker, on this machine:"
        f" {EXECUTOR}=process dstack run ... (`dstack server stop` first if the local server"
        f" runs); or set {DEFAULT_IMAGE} to an image this machine has"
    )


class DockerHandle:
    """A job's container; see `JobHandle` for the contract of each method."""

    def __init__(self, container: Any, output: OutputSink) -> None:
        self._container = container
        self._output = output
        self._exited = threading.Event()
        self._followers: list[threading.Thread] = []
        self._result: ExitResult | None = None
        self._output_failed = False
        self._lock = threading.Lock()

    @property
    def container_id(self) -> str:
        return str(self._container.id)

    def follow(self) -> None:
        """Start streaming output and waiting for the exit, each on its own thread."""
        for stream in JOB_STREAMS:
            thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
            thread.start()
            self._followers.append(thread)
        threading.Thread(target=self._wait_exit, daemon=True).start()

    def wait(self, timeout: float | None = None) -> ExitResult | None:
        if not self._exited.wait(timeout):
            return None
        with self._lock:
            if self._result is None:
                for thread in self._followers:
                    thread.join(_LOG_JOIN_TIMEOUT)
                self._result = self._inspect_exit()
            return self._result

    def stop(self, grace: float) -> None:
        with contextlib.suppress(DockerException):  # not running any more
            self._container.stop(timeout=max(0, math.ceil(grace)))

    def kill(self) -> None:
        with contextlib.suppress(DockerException):  # not running any more
            self._container.kill()

    def cleanup(self) -> None:
        with contextlib.suppress(DockerException):  # removed already
            self._container.remove(force=True)
        self._exited.set()

    def _pump(self, stream: LogStream) -> None:
        out, err = stream is LogStream.STDOUT, stream is LogStream.STDERR
        api = self._container.client.api
        try:
            for chunk in api.logs(
                self._container.id, stdout=out, stderr=err, stream=True, follow=True
            ):
                self._record(stream, chunk)
        except DockerException:
            pass  # the container was removed under us (forget, cleanup)

    def _record(self, stream: LogStream, chunk: bytes) -> None:
        """Pass output on; a failing log (a full disk) must not stop the following."""
        try:
            self._output(stream, chunk)
        except Exception:
            if not self._output_failed:
                log.exception("cannot record the output of a job; it keeps running")
            self._output_failed = True

    def _wait_exit(self) -> None:
        try:
            with contextlib.suppress(DockerException):
                self._container.wait()
        finally:
            self._exited.set()

    def _inspect_exit(self) -> ExitResult:
        try:
            self._container.reload()
        except DockerException:
            return ExitResult(exit_code=137)  # removed while running: it was killed
        state = self._container.attrs.get("State", {})
        return ExitResult(exit_code=int(state.get("ExitCode", 0)), oom=bool(state.get("OOMKilled")))


def _owner_labels(owner: RunnerIdentity) -> dict[str, str]:
    return {RUNNER_ID_LABEL: owner.runner_id, SERVER_ID_LABEL: owner.server_id}


def _limits(spec: JobSpec, gpu_indexes: list[int]) -> dict[str, Any]:
    resources = spec.resources
    limits: dict[str, Any] = {}
    if resources.memory_mib:
        limits["mem_limit"] = f"{resources.memory_mib}m"
        limits["memswap_limit"] = f"{resources.memory_mib}m"  # no swap: OOM instead of crawling
    if resources.cpu:
        limits["nano_cpus"] = resources.cpu * 10**9
    if resources.shm_size_mib:
        limits["shm_size"] = f"{resources.shm_size_mib}m"
    if gpu_indexes:
        ids = [str(i) for i in gpu_indexes]
        limits["device_requests"] = [DeviceRequest(device_ids=ids, capabilities=[["gpu"]])]
    elif resources.gpu_count:
        count = resources.gpu_count
        limits["device_requests"] = [DeviceRequest(count=count, capabilities=[["gpu"]])]
    return limits


def _explain(exc: Exception) -> str:
    """The engine's own words, on one line."""
    text = getattr(exc, "explanation", None) or str(exc)
    return " ".join(str(text).split())
