"""Bodies of the run endpoints a user's client calls for every run: submit, plan, logs,
stop, tag, and the blobs the code needs.

Kept apart from `dstack.models.protocol` (which re-exports them) so that `dstack run` does
not define the models of the runner and team endpoints: each model costs its definition
at every command's start.
"""

from __future__ import annotations

from pydantic import Field

from dstack.models.artifacts import JobExplanation
from dstack.models.bounds import Count, Text
from dstack.models.common import Model
from dstack.models.job import JobSpec
from dstack.models.logs import LogEvent
from dstack.models.names import TagName, WorkflowName
from dstack.models.repo import RepoRef
from dstack.models.run import Run
from dstack.models.workflow import DepRef


class JobSubmission(Model):
    workflow_name: WorkflowName | None
    spec: JobSpec
    deps: list[Count] = Field(default_factory=list, description="Indexes of jobs it waits for.")
    external_deps: list[DepRef] = Field(
        default_factory=list, description="Tags and `X:latest`: artifacts of earlier runs."
    )
    code_key: Text = Field(
        "", description="The code the job sees: the tree hash, or `tree_of(triggers)`."
    )


class SubmitRunRequest(Model):
    repo: RepoRef
    workflow_name: WorkflowName | None = None
    provider: Text | None = None
    args: list[str] = Field(default_factory=list)
    variables: dict[str, str] = Field(default_factory=dict)
    tag: TagName | None = None
    reload: bool = Field(False, description="Run every job even when an earlier result fits.")
    jobs: list[JobSubmission] = Field(min_length=1, description="In dependency order.")


class PlanResponse(Model):
    jobs: list[JobExplanation]


class TagRequest(Model):
    name: TagName
    run_name: Text


class NameRef(Model):
    """A run or a tag by its name, whatever it is: one stored before names had a rule (with a
    `/`, or too long for a URL) is still found."""

    name: str


class TagRef(NameRef):
    """A tag by its name, whatever it is, in repository `repo_id`."""

    repo_id: str = Field(max_length=500)


class MissingBlobsRequest(Model):
    digests: list[Text]


class MissingBlobsResponse(Model):
    missing: list[str]


class RunDeleted(Model):
    """The answer to deleting a run: what its removal leaves for garbage collection."""

    name: str
    freed_bytes: int = Field(
        0,
        description="Bytes of the blobs (artifacts, code) that nothing references any more "
        "once the run is gone; garbage collection deletes them within `gc_grace_seconds`.",
    )
    gc_grace_seconds: float = Field(
        0.0, description="How long an unreferenced blob is kept before it is deleted."
    )


class StopRunRequest(Model):
    abort: bool = False


class RerunRequest(Model):
    reload: bool = Field(False, description="Run every job even when an earlier result fits.")


class LogsPage(Model):
    events: list[LogEvent] = Field(description="Ordered by job index, then seq.")
    cursor: str = Field(description="Opaque; pass it back to get the lines after these.")
    finished: bool = Field(description="The run is finished and every line was returned.")
    run: Run | None = Field(
        None,
        description="The run's final state when `finished`, if the server includes it (it "
        "spares the client a request for it).",
    )
