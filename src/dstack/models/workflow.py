"""A workflow after its file was read, variables substituted and syntax variants normalized.

`dstack.config` produces these from `.dstack/` files; `dstack.providers` turns one into
`JobSpec`s. Nothing here knows which YAML spelling the user wrote.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from dstack.models.common import Model
from dstack.models.paths import DeclaredPath
from dstack.models.resources import ResourcesSpec


class SourceLocation(Model):
    """Where a workflow was defined, for error messages: ``.dstack/workflows.yaml:14``."""

    file: str
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


class DepKind(StrEnum):
    WORKFLOW = "workflow"  # run the workflow in this run's DAG (unless cached)
    TAG = "tag"  # use the artifacts of the run tagged `tag`
    LATEST = "latest"  # use the artifacts of the latest successful run of `workflow`


class DepRef(Model):
    kind: DepKind
    workflow: str | None = Field(None, description="Workflow name (kinds workflow and latest).")
    tag: str | None = Field(None, description="Tag name (kind tag).")
    repo: str | None = Field(None, description="Another repository, `owner/repo`.")

    def __str__(self) -> str:
        prefix = f"{self.repo}/" if self.repo else ""
        if self.kind is DepKind.TAG:
            return f"{prefix}{self.workflow or ''}:{self.tag}"
        if self.kind is DepKind.LATEST:
            return f"{prefix}{self.workflow}:latest"
        return f"{prefix}{self.workflow}"


class ArtifactSpec(Model):
    path: DeclaredPath = Field(
        description="Folder (or file) the job writes, relative to its working dir (see "
        "`models/paths.py` for the accepted forms)."
    )
    mount: bool = Field(False, description="Sync continuously, for very large or live outputs.")


class RegistryAuth(Model):
    username: str | None = None
    password: str | None = None


class RepoProviderSpec(Model):
    """A provider of the repository's own `.dstack/providers.yaml`: an image and commands."""

    name: str
    image: str | None = Field(None, description="None: the default image, as for `bash`.")
    commands: list[str] = Field(
        default_factory=list, description="Run with bash; none: the image's own command."
    )
    artifacts: list[ArtifactSpec] = Field(default_factory=list)
    source: SourceLocation


class WorkflowSpec(Model):
    """One workflow, fully resolved: every value below is final except `${{ secrets.X }}`."""

    name: str
    provider: str = Field(description="Provider name; `docker` when the file had only an image.")
    help: str | None = None
    source: SourceLocation
    image: str | None = None
    commands: list[str] = Field(default_factory=list)
    setup: list[str] = Field(default_factory=list, description="Commands run before the app.")
    entrypoint: str | None = None
    file: str | None = Field(None, description="Script of the python/streamlit/gradio providers.")
    app: str | None = Field(None, description="ASGI app of the fastapi provider, `main:app`.")
    args: list[str] = Field(default_factory=list, description="Arguments passed to the script.")
    python: str | None = Field(None, description="Python version, `3.10`.")
    requirements: str | None = None
    env: dict[str, str | None] = Field(
        default_factory=dict, description="None means: take the value from the caller's env."
    )
    artifacts: list[ArtifactSpec] = Field(default_factory=list)
    cache: list[DeclaredPath] = Field(default_factory=list)
    deps: list[DepRef] = Field(default_factory=list)
    triggers: list[str] = Field(
        default_factory=list, description="Path patterns: only these files count as code input."
    )
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    port_count: int = Field(0, ge=0, description="`ports: N`: N ports the runner allocates.")
    ports: list[int] = Field(default_factory=list, description="`ports: [8000]`: fixed ports.")
    working_dir: str | None = Field(None, description="Relative to the `.dstack/` folder's parent.")
    registry_auth: RegistryAuth | None = None
    ssh: bool = False
    retry: int | None = Field(
        None,
        ge=0,
        description="Re-queue after a lost runner or an interruption this many times; None: "
        "not set (3 after interruptions for `interruptible` workflows, else 0).",
    )
    labels: dict[str, str] = Field(
        default_factory=dict, description="Run only on runners with these labels."
    )
    variables: dict[str, str] = Field(
        default_factory=dict, description="Resolved variables; also exported upper-cased."
    )
    repo_provider: RepoProviderSpec | None = Field(
        None, description="The `.dstack/providers.yaml` provider `provider` names, if any."
    )
    params: dict[str, str] = Field(
        default_factory=dict,
        description="The workflow's keys as written (scalars as text, the rest as JSON), for "
        "a `.dstack/providers.yaml` provider: its commands see them as variables.",
    )
