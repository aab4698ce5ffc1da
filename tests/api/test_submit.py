"""`submit`: code uploaded once is not asked about again, and is uploaded anew if lost."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from dstack.api import Client
from dstack.api.submit import submit
from dstack.errors import MissingBlobsError
from dstack.models.protocol import JobSubmission, SubmitRunRequest
from dstack.models.repo import RepoRef
from dstack.providers.plan import plan_provider
from dstack.repo.git import read_repo_state
from dstack.storage.local import LocalBlobStore

from .conftest import LiveServer


class _Counting(Client):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[str] = []

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        self.calls.append(f"{method} {path.split('/')[2]}")
        return super().request(method, path, **kwargs)


def _repo(root: Path, *, dirty: bool) -> Path:
    root.mkdir()
    env = {"GIT_AUTHOR_NAME": "a", "GIT_AUTHOR_EMAIL": "a@b", "GIT_COMMITTER_NAME": "a"}
    env |= {"GIT_COMMITTER_EMAIL": "a@b", "PATH": "/usr/bin:/bin"}
    (root / "train.sh").write_text("echo train\n")
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "first"]):
        subprocess.run(["git", *args], cwd=root, env=env, check=True, capture_output=True)
    if dirty:
        (root / "train.sh").write_text("echo changed\n")
    return root


@pytest.mark.parametrize("dirty", [False, True])
def test_known_code_is_not_asked_about_and_lost_code_is_uploaded_again(
    live_server: LiveServer, tmp_path: Path, dirty: bool
) -> None:
    state = read_repo_state(_repo(tmp_path / "repo", dirty=dirty))
    plan = plan_provider("bash", ["-c", "true"], subdir="", environ={})
    cache = tmp_path / "cache"
    with _Counting(live_server.url, live_server.token) as client:
        first = submit(client, plan, state, subdir="", cache_dir=cache)
        uploads = client.calls.count("PUT blobs")
        assert uploads == (2 if dirty else 1)

        client.calls.clear()
        submit(client, plan, state, subdir="", cache_dir=cache)
        assert client.calls == ["POST runs"]

        store = LocalBlobStore(live_server.settings.resolved_blob_dir())
        for digest in (first.repo.bundle_digest, first.repo.diff_digest):
            if digest is not None:
                store.delete(digest)
        client.calls.clear()
        again = submit(client, plan, state, subdir="", cache_dir=cache)
        assert client.calls.count("PUT blobs") == uploads
        assert client.calls[-1] == "POST runs"
        assert again.repo.bundle_digest == first.repo.bundle_digest
        assert store.exists(again.repo.bundle_digest or "")


def test_a_run_whose_code_the_server_lacks_is_refused(live_server: LiveServer) -> None:
    plan = plan_provider("bash", ["-c", "true"], subdir="", environ={})
    request = SubmitRunRequest(
        repo=RepoRef(repo_id="local/x", tree="0" * 40, commit="1" * 40, bundle_digest="a" * 64),
        provider="bash",
        jobs=[JobSubmission(workflow_name=None, spec=plan.jobs[0].spec)],
    )
    with (
        Client(live_server.url, live_server.token) as client,
        pytest.raises(MissingBlobsError, match="a" * 12),
    ):
        client.submit_run(request)
