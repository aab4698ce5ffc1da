"""Executors: how a job's commands actually run (a Docker container or a host process)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dstack.errors import ConfigError
from dstack.runner.executors.base import (
    Executor,
    ExitResult,
    JobHandle,
    JobLaunch,
    RunnerIdentity,
)
from dstack.runner.executors.process import ProcessExecutor
from dstack.runner.jobuser import resolve_job_user

if TYPE_CHECKING:
    from dstack.runner.settings import RunnerSettings

EXECUTORS = ("docker", "process")

__all__ = [
    "EXECUTORS",
    "Executor",
    "ExitResult",
    "JobHandle",
    "JobLaunch",
    "RunnerIdentity",
    "create_executor",
]


def create_executor(settings: RunnerSettings) -> Executor:
    """The executor `settings.executor` names; None: docker when an engine answers, else process.

    Asking for docker explicitly without an engine raises `ExecutorError`.
    """
    choice = settings.executor
    if choice not in (None, *EXECUTORS):
        raise ConfigError(f"unknown executor '{choice}'", f"use one of: {', '.join(EXECUTORS)}")
    if choice in (None, "docker"):
        # the docker SDK costs ~55 ms at import: runners with --executor process never load it
        from dstack.runner.executors.docker import DockerExecutor, docker_client

        client = docker_client(required=choice == "docker")
        if client is not None:
            return DockerExecutor(client, images=settings.images)
    return ProcessExecutor(job_user=resolve_job_user(settings.job_user))
