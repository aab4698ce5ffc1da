"""`Client`: the typed client of the user endpoints. The CLI is built on it; scripts can be."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from dstack.api.backends import BackendsClient
from dstack.api.base import validate_list
from dstack.api.plainhttp import Timeouts
from dstack.api.repos import ReposClient
from dstack.api.teams import TeamsClient
from dstack.errors import NotFoundError
from dstack.models.artifacts import JobArtifacts, Tag
from dstack.models.names import url_segment
from dstack.models.run import Run
from dstack.models.runs_api import (
    LogsPage,
    PlanResponse,
    RerunRequest,
    RunDeleted,
    StopRunRequest,
    SubmitRunRequest,
    TagRequest,
)

if TYPE_CHECKING:  # the models of other endpoints are defined when used, not at every start
    from dstack.models.protocol import ImportRunRequest, UploadRunRequest
    from dstack.models.runner import Runner

_URL_SEGMENT_MAX = 4096


def _unaddressable(name: str) -> bool:
    """A name stored before the name rule that no URL path can carry: it is sent in a body."""
    return "/" in name or len(url_segment(name)) > _URL_SEGMENT_MAX


class Client(ReposClient, TeamsClient, BackendsClient):
    """`Client(base_url, token, timeout=30)`; use as a context manager or call `close()`."""

    def rebase(self, base_url: str, token: str) -> None:
        """Send the next requests to `base_url` with `token` (the local server came back on
        another port)."""
        self.transport.rebase(base_url, token)
        self.base_url = self.transport.base_url

    def health(self) -> dict[str, str]:
        data: dict[str, str] = self.request("GET", "/api/health").json()
        return data

    def check_token(self) -> None:
        """Prove that the server accepts this client's token (`AuthError` if not): asks who
        the user is, or, on a server without users, any authenticated endpoint."""
        try:
            self.request("GET", "/api/users/me")
        except NotFoundError:
            self.request("GET", "/api/runners")

    def ui_sign_in_url(self) -> str:
        """A one-time link that signs this client's user in to the server's web UI (the code
        in it is good once, for a minute)."""
        answer: dict[str, str] = self.request("POST", "/api/ui/codes").json()
        return self.base_url + answer["path"]

    def submit_run(self, request: SubmitRunRequest) -> Run:
        body = request.model_dump(mode="json")
        return Run.model_validate(self.request("POST", "/api/runs", json=body).json())

    def list_runs(self, all: bool = False, repo_id: str | None = None) -> list[Run]:
        """Newest first; without `all`, unfinished runs and the last few finished ones."""
        params: dict[str, Any] = {"all": all}
        if repo_id is not None:
            params["repo_id"] = repo_id
        return validate_list(Run, self.request("GET", "/api/runs", params=params).json())

    def get_run(self, name: str) -> Run:
        return Run.model_validate(self.request("GET", f"/api/runs/{url_segment(name)}").json())

    def stop_run(self, name: str, abort: bool = False) -> Run:
        body = StopRunRequest(abort=abort).model_dump(mode="json")
        return Run.model_validate(
            self.request("POST", f"/api/runs/{url_segment(name)}/stop", json=body).json()
        )

    def rerun(self, name: str, reload: bool = False) -> Run:
        """Submit run `name` again as it was submitted (the server keeps its submission)."""
        body = RerunRequest(reload=reload).model_dump(mode="json")
        return Run.model_validate(
            self.request("POST", f"/api/runs/{url_segment(name)}/rerun", json=body).json()
        )

    def delete_run(self, name: str) -> RunDeleted:
        """Delete a finished run; the answer says how many bytes garbage collection frees
        (a server that answers 204, from before it said so: nothing counted)."""
        if _unaddressable(name):
            response = self.request("POST", "/api/runs/delete", json={"name": name})
        else:
            response = self.request("DELETE", f"/api/runs/{url_segment(name)}")
        if response.status_code == 204 or not response.content:
            return RunDeleted(name=name)
        return RunDeleted.model_validate(response.json())

    def get_logs(
        self,
        name: str,
        cursor: str | None = None,
        since: datetime | None = None,
        wait: float | None = None,
        with_run: bool = False,
    ) -> LogsPage:
        """One page of the run's logs after `cursor`; `wait` long-polls that many seconds;
        with `with_run`, the last page carries the finished run."""
        params: dict[str, Any] = {}
        if with_run:
            params["with_run"] = "true"
        if cursor:
            params["cursor"] = cursor
        if since is not None:
            params["since"] = since.isoformat()
        timeout: dict[str, Any] = {}
        if wait:
            params["wait"] = wait
            # The read timeout must outlast the long-poll.
            timeout["timeout"] = Timeouts(connect=10.0, read=wait + 30)
        response = self.request(
            "GET", f"/api/runs/{url_segment(name)}/logs", params=params, **timeout
        )
        return LogsPage.model_validate(response.json())

    def list_runners(self) -> list[Runner]:
        from dstack.models.runner import Runner  # ~3 ms only `dstack runners` needs

        return validate_list(Runner, self.request("GET", "/api/runners").json())

    # --- artifacts, tags, caches -------------------------------------------------------------
    def plan_run(self, request: SubmitRunRequest) -> PlanResponse:
        """Per job: reused (from which run) or why it would run. Creates nothing."""
        body = request.model_dump(mode="json")
        return PlanResponse.model_validate(self.request("POST", "/api/runs/plan", json=body).json())

    def get_artifacts(self, name: str) -> list[JobArtifacts]:
        """The run's artifacts per job; a cached job shows the run it reuses."""
        response = self.request("GET", f"/api/runs/{url_segment(name)}/artifacts")
        return validate_list(JobArtifacts, response.json())

    def list_tags(self, repo_id: str | None = None) -> list[Tag]:
        params = {"repo_id": repo_id} if repo_id is not None else {}
        return validate_list(Tag, self.request("GET", "/api/tags", params=params).json())

    def add_tag(self, name: str, run_name: str) -> Tag:
        """Tag a successful run. `ConflictError` if the name is taken or the run not done."""
        body = TagRequest(name=name, run_name=run_name).model_dump(mode="json")
        return Tag.model_validate(self.request("POST", "/api/tags", json=body).json())

    def delete_tag(self, name: str, repo_id: str) -> None:
        """Delete the tag `name` of repository `repo_id` (the run stays)."""
        if _unaddressable(name):
            self.request("POST", "/api/tags/delete", json={"name": name, "repo_id": repo_id})
            return
        self.request("DELETE", f"/api/tags/{url_segment(name)}", params={"repo_id": repo_id})

    def upload_run(self, request: UploadRunRequest) -> Run:
        """Store uploaded manifests as a finished run, tagged (blobs must be uploaded first)."""
        body = request.model_dump(mode="json")
        return Run.model_validate(self.request("POST", "/api/runs/upload", json=body).json())

    def import_run(self, request: ImportRunRequest) -> Run:
        """Store a finished run copied from another server (its blobs uploaded first); the
        same run again is a no-op. `ConflictError` when another run has its name."""
        body = request.model_dump(mode="json")
        return Run.model_validate(self.request("POST", "/api/runs/import", json=body).json())

    def prune_cache(self, repo_id: str, workflow: str) -> int:
        """Empty a workflow's saved caches; returns how many cache paths were removed."""
        params = {"repo_id": repo_id, "workflow": workflow}
        response = self.request("DELETE", "/api/caches", params=params)
        return int(response.json()["deleted"])
