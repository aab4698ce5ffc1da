"""Pydantic models of the raw `.dstack/workflows.yaml` item, every 2021-2023 spelling included.

`dstack.config.normalize` turns a `RawWorkflow` into a `WorkflowSpec`. Field descriptions say
what a value may be; they are shown to the user when a value has the wrong type.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

Scalar = str | int | float | bool


class RawModel(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=False)


class RawGpu(RawModel):
    name: str | None = Field(None, description="a GPU model such as A100")
    count: int | None = Field(None, ge=0, description="a number of GPUs")
    memory: str | int | None = Field(None, description="a size such as 16GB")


class RawResources(RawModel):
    cpu: int | None = Field(None, ge=0, description="a number of CPUs")
    memory: str | int | None = Field(None, description="a size such as 16GB")
    gpu: int | RawGpu | None = Field(
        None, description="a number of GPUs or a mapping {name, count, memory}"
    )
    shm_size: str | int | None = Field(None, description="a size such as 8GB")
    interruptible: bool | None = Field(None, description="true or false")
    local: bool | None = Field(None, description="true or false")
    nodes: int | None = Field(None, ge=1, le=256, description="a number of machines, 1 to 256")


class RawArtifact(RawModel):
    path: str = Field(description="a path")
    mount: bool = Field(False, description="true or false")


class RawCache(RawModel):
    path: str = Field(description="a path")


class RawDep(RawModel):
    workflow: str | None = Field(None, description="a workflow name, optionally owner/repo/name")
    tag: str | None = Field(None, description="a tag name, optionally owner/repo/tag")


class RawTriggerRepo(RawModel):
    include: list[str] = Field(default_factory=list, description="a list of path patterns")


class RawTrigger(RawModel):
    repo: RawTriggerRepo = Field(description="a mapping {include: [paths]}")


class RawRegistryAuth(RawModel):
    username: str | None = Field(None, description="a string")
    password: str | None = Field(None, description="a string")


class RawRetry(RawModel):
    limit: int = Field(ge=0, description="how many times to re-queue after a lost runner")


class RawWorkflow(RawModel):
    """One item of `workflows:` after legacy checks, unwrapping and interpolation."""

    name: str = Field(description="a workflow name")
    help: str | None = Field(None, description="a text")
    provider: str | list[str] | None = Field(None, description="a provider name such as bash")
    image: str | None = Field(None, description="a Docker image name")
    commands: list[str] = Field(default_factory=list, description="a list of commands")
    setup: list[str] = Field(default_factory=list, description="a list of commands")
    before_run: list[str] = Field(default_factory=list, description="a list of commands")
    entrypoint: str | None = Field(None, description="a command")
    python_script: str | None = Field(None, description="a script path")
    script: str | None = Field(None, description="a script path")
    file: str | None = Field(None, description="a script path")
    target: str | None = Field(None, description="a script path")
    app: str | None = Field(None, description="an ASGI app such as main:app")
    args: list[Scalar] | str | None = Field(None, description="a list of arguments")
    python: Scalar | list[Any] | None = Field(None, description="a Python version such as 3.10")
    version: Scalar | list[Any] | None = Field(None, description="a Python version such as 3.10")
    requirements: str | None = Field(None, description="a path to a requirements file")
    env: list[str] | dict[str, Scalar | None] | None = Field(
        None, description="a list of NAME=value items"
    )
    environment: dict[str, Scalar | None] | None = Field(None, description="a mapping NAME: value")
    artifacts: list[str | RawArtifact] | None = Field(
        None, description="a list of paths or {path, mount} mappings"
    )
    cache: list[str | RawCache] | None = Field(
        None, description="a list of paths or {path} mappings"
    )
    deps: list[str | RawDep] | None = Field(
        None, description="a list of {workflow: name} or {tag: name} items"
    )
    depends_on: list[str] | None = Field(
        None, alias="depends-on", description="a list of workflow names (X, X:latest, X:tag)"
    )
    triggers: list[str | RawTrigger] | None = Field(None, description="a list of path patterns")
    resources: RawResources | None = Field(
        None, description="a mapping {cpu, memory, gpu, shm_size, interruptible, local}"
    )
    ports: int | list[int | str] | None = Field(
        None, description="a number of ports or a list of port numbers"
    )
    working_dir: str | None = Field(None, description="a folder path")
    registry_auth: RawRegistryAuth | None = Field(
        None, description="a mapping {username, password}"
    )
    ssh: bool = Field(False, description="true or false")
    retry: int | RawRetry | None = Field(
        None,
        description="a number of re-queues after a lost runner or an interruption, or {limit: N}",
    )
    labels: dict[str, Scalar] | None = Field(
        None, description="a mapping label: value that the runner must have"
    )


def field_names(model: type[BaseModel]) -> list[str]:
    """The keys a model accepts, as the user writes them (aliases included)."""
    return [info.alias or name for name, info in model.model_fields.items()]
