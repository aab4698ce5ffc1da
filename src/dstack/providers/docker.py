"""`provider: docker` — run commands (or the default command) of a given image."""

from __future__ import annotations

import shlex

from dstack.errors import ConfigError
from dstack.models.job import JobSpec
from dstack.models.workflow import WorkflowSpec
from dstack.providers.base import Provider, SubmissionContext, base_job_spec, require, where

SHELL_ENTRYPOINT = ["sh", "-c", 'exec "$(command -v bash || echo /bin/sh)" -c "$0"']
"""Runs the job's script (`$0`) with bash where the image has it, else with sh: a user's
image may have no bash (busybox, alpine), while every image with a shell has `sh`."""


class DockerProvider(Provider):
    """The workflow's image, with `setup` + `commands`, or none: the image's own command.

    `entrypoint: /bin/sh -i -c` is split like a shell would split it; without one, commands
    run with bash if the image has it, else sh (`SHELL_ENTRYPOINT`). Nothing is installed:
    the image is the user's, it may have neither pip nor Python.
    """

    name = "docker"
    reads = frozenset({"commands", "entrypoint"})
    usage = "IMAGE [-c COMMAND]..."
    positional = "image"
    summary = "Run a container image."

    def job_spec(self, workflow: WorkflowSpec, ctx: SubmissionContext) -> JobSpec:
        require(workflow, workflow.image, "image", "ubuntu")
        commands = [*workflow.setup, *workflow.commands]
        entrypoint = _split_entrypoint(workflow)
        if entrypoint is None and commands:
            entrypoint = list(SHELL_ENTRYPOINT)
        return base_job_spec(workflow, ctx, commands=commands, entrypoint=entrypoint)


def _split_entrypoint(workflow: WorkflowSpec) -> list[str] | None:
    if workflow.entrypoint is None:
        return None
    try:
        parts = shlex.split(workflow.entrypoint)
    except ValueError as exc:
        raise ConfigError(
            f"entrypoint of {where(workflow)} cannot be parsed: {exc}",
            hint="check the quotes, e.g. `entrypoint: /bin/sh -i -c`",
        ) from exc
    if not parts:
        raise ConfigError(f"entrypoint of {where(workflow)} is empty", hint="remove it or set one")
    return parts
