"""Paths from workflows, manifests and requests stay inside the job's folder (issue #13, Paths).

Each edge checks on its own: the CLI (workflow files, `-a`), the server (422 for manifests,
uploads, imports, runs), the runner (before syncing, before placing) and `dstack cp`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from tests.e2e.conftest import Env, process_env
from tests.runner.artifact_helpers import (
    CountingStore,
    assign,
    digest_of,
    running,
    stored_manifest,
)
from tests.runner.conftest import FakeRunnerApi, fake_api, repo_ref
from tests.server.conftest import anyio_backend, clock, db_url, postgres, settings, submission

from dstack.errors import StorageError
from dstack.models.artifacts import DepArtifacts, FileEntry, JobArtifacts, Manifest
from dstack.models.digests import digest_bytes
from dstack.models.job import JobStatus
from dstack.models.paths import PathError, check_entry, normalize_declared
from dstack.models.repo import RepoRef
from dstack.models.workflow import ArtifactSpec
from dstack.server.app import create_app
from dstack.server.settings import ServerSettings
from dstack.storage.local import LocalBlobStore
from dstack.storage.manifests import scan
from dstack.storage.memory import MemoryBlobStore
from dstack.storage.paths import UnsafePathError
from dstack.storage.transfer import place, push

__all__ = [
    "anyio_backend",
    "clock",
    "db_url",
    "fake_api",
    "postgres",
    "process_env",
    "repo_ref",
    "settings",
]  # fixtures

ESCAPES = ["../x", "a/../../x", "./../x", "~/../x", "/workflow/../../etc", "..\\..\\x"]
ODD = ["/", "//etc", "a//b", "x\0y", "line\nbreak", ""]
SECRET = b"host secret\n"


def _entry(path: str, data: bytes = b"x") -> FileEntry:
    digest = digest_bytes(data)
    return FileEntry.model_construct(path=path, size=len(data), mode=0o644, digest=digest)


# --- the one validator ------------------------------------------------------------------
@pytest.mark.parametrize("path", ESCAPES + ODD)
def test_declared_paths_that_leave_or_are_malformed_are_refused(path: str) -> None:
    with pytest.raises(PathError):
        normalize_declared(path)


@pytest.mark.parametrize(
    ("path", "normal"),
    [
        ("./lightning_logs", "lightning_logs"),
        ("dir2/dir22/", "dir2/dir22"),
        ("~/.cache/pip", "~/.cache/pip"),
        ("/opt/conda/envs/myenv", "/opt/conda/envs/myenv"),
        ("models/$model", "models/$model"),
        ("%2e%2e/x", "%2e%2e/x"),  # not a URL: a folder with that literal name, inside
        (".", "."),
    ],
)
def test_declared_paths_of_real_workflows_are_accepted(path: str, normal: str) -> None:
    assert normalize_declared(path) == normal


@pytest.mark.parametrize(
    "entry", ["../x", "a/../../x", "./x", "/etc/passwd", "//etc", "a//b", "a\\..\\b", "a\0b", "a/"]
)
def test_entry_paths_must_be_normalized_and_relative(entry: str) -> None:
    with pytest.raises(PathError):
        check_entry(entry)


def test_a_manifest_with_a_file_that_is_also_a_folder_is_invalid() -> None:
    entries = [_entry("a"), _entry("a/b")]
    with pytest.raises(ValidationError, match="'a' both as a file and a folder"):
        Manifest(path="out", files=entries)


# --- the server: 422 naming the path ---------------------------------------------------
AUTH = {"Authorization": "Bearer secret-token"}


@pytest.fixture
async def http(settings: ServerSettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, blobs=MemoryBlobStore())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


def _upload(path: str = "out", entry: str = "model.bin", **numbers: int) -> dict[str, Any]:
    file = {"path": entry, "size": 1, "mode": 0o644, "digest": digest_of(b"x")} | numbers
    return {
        "tag": "evil",
        "repo": {"repo_id": "github.com/acme/models", "tree": "0" * 40},
        "manifests": [{"path": path, "files": [file]}],
    }


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "named"),
    [
        (_upload(path="../../etc"), "'../../etc' has a '..' component"),
        (_upload(path="/a/./../b"), "'..' component"),
        (_upload(entry="a/../../x"), "'a/../../x'"),
        (_upload(entry="/etc/passwd"), "'/etc/passwd'"),
        (_upload(entry="a\0b"), "control character"),
        (_upload(mode=2**40), "less than or equal to 511"),
        (_upload(mode=-1), "greater than or equal to 0"),
        (_upload(size=2**70), "less than or equal to"),
    ],
)
async def test_uploads_with_bad_paths_or_numbers_are_422_naming_them(
    http: httpx.AsyncClient, body: dict[str, Any], named: str
) -> None:
    response = await http.post("/api/runs/upload", json=body, headers=AUTH)

    assert response.status_code == 422
    assert named in response.json()["error"]["message"]
    assert (await http.get("/api/tags", headers=AUTH)).json() == []


@pytest.mark.anyio
async def test_a_run_declaring_an_escaping_artifact_or_cache_is_422(
    http: httpx.AsyncClient,
) -> None:
    body = submission().model_dump(mode="json")
    body["jobs"][0]["spec"]["artifacts"] = [{"path": "a/../../x", "mount": False}]
    response = await http.post("/api/runs", json=body, headers=AUTH)
    assert response.status_code == 422
    assert "'a/../../x'" in response.json()["error"]["message"]

    body["jobs"][0]["spec"]["artifacts"] = []
    body["jobs"][0]["spec"]["cache"] = ["~/../../.ssh"]
    response = await http.post("/api/runs", json=body, headers=AUTH)
    assert response.status_code == 422
    assert (await http.get("/api/runs", headers=AUTH)).json() == []


@pytest.mark.anyio
async def test_an_import_with_an_escaping_manifest_is_422(http: httpx.AsyncClient) -> None:
    submitted = await http.post(
        "/api/runs", json=submission().model_dump(mode="json"), headers=AUTH
    )
    run = submitted.json()
    body = {
        "run": run,
        "artifacts": [
            {
                "job_id": run["jobs"][0]["id"],
                "run_name": run["name"],
                "workflow_name": None,
                "manifests": [{"path": "../../home", "files": []}],
            }
        ],
    }
    response = await http.post("/api/runs/import", json=body, headers=AUTH)

    assert response.status_code == 422
    assert "'../../home'" in response.json()["error"]["message"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    "url",
    [
        "/api/blobs/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/api/blobs/..%2F..%2Fetc%2Fpasswd",
        "/api/blobs/%2e%2e",
        "/api/runs/%2e%2e%2f%2e%2e/artifacts",
    ],
)
async def test_encoded_dots_in_urls_reach_no_file(http: httpx.AsyncClient, url: str) -> None:
    response = await http.get(url, headers=AUTH)

    assert 400 <= response.status_code < 500
    assert b"root:" not in response.content


# --- the runner: nothing of the host is uploaded ---------------------------------------
def _secret(tmp_path: Path) -> Path:
    folder = tmp_path / "host"
    folder.mkdir(exist_ok=True)
    (folder / "token").write_bytes(SECRET)
    return folder


def _uploaded_nothing_of(store: CountingStore, api: FakeRunnerApi) -> None:
    assert not store.exists(digest_of(SECRET))
    posted = [f.digest for m in api.artifacts.get("job-1", []) for f in m.files]
    assert digest_of(SECRET) not in posted


@pytest.mark.parametrize(
    "plant",
    [
        "ln -s {host} out",  # the root is a link to a host folder
        "ln -s {host}/token out",  # ... to a host file
        "ln -s {host} l2 && ln -s l2 l1 && ln -s l1 out",  # a chain of links
        "ln -s {host} d && mkdir -p real && ln -s d/.. up && ln -s {host}/.. out",
    ],
)
def test_a_symlinked_artifact_root_is_not_uploaded(
    tmp_path: Path, fake_api: FakeRunnerApi, repo_ref: RepoRef, plant: str
) -> None:
    host = _secret(tmp_path)
    store = CountingStore()
    job = assign(repo_ref, plant.format(host=host), artifacts=["out"])
    with running(tmp_path, fake_api, store):
        fake_api.assignments.put(job)
        assert fake_api.wait_final("job-1").status is JobStatus.DONE
    _uploaded_nothing_of(store, fake_api)
    assert "not saved" in fake_api.text("job-1")
    assert "symbolic link" in fake_api.text("job-1")


def test_an_artifact_under_a_linked_parent_folder_is_not_uploaded(
    tmp_path: Path, fake_api: FakeRunnerApi, repo_ref: RepoRef
) -> None:
    host = _secret(tmp_path)
    store = CountingStore()
    (host / "sub").mkdir()
    (host / "sub" / "key").write_bytes(SECRET)
    job = assign(repo_ref, f"ln -s {host} d", artifacts=["d/sub", "d"])
    with running(tmp_path, fake_api, store):
        fake_api.assignments.put(job)
        fake_api.wait_final("job-1")
    _uploaded_nothing_of(store, fake_api)


def test_links_inside_an_artifact_are_never_followed_out_of_it(
    tmp_path: Path, fake_api: FakeRunnerApi, repo_ref: RepoRef
) -> None:
    host = _secret(tmp_path)
    store = CountingStore()
    job = assign(
        repo_ref,
        "mkdir -p out/sub && echo ok > out/real",
        f"ln -s {host}/token out/leak && ln -s {host} out/dir && ln -s ../../.. out/sub/up",
        "ln -s ../real out/sub/alias",
        artifacts=["out"],
    )
    with running(tmp_path, fake_api, store):
        fake_api.assignments.put(job)
        assert fake_api.wait_final("job-1").status is JobStatus.DONE
    _uploaded_nothing_of(store, fake_api)
    names = {f.path for f in fake_api.latest("job-1", "out").files}
    assert names == {"real", "sub/alias"}


def test_a_file_swapped_for_a_link_after_the_scan_is_not_read(tmp_path: Path) -> None:
    host = _secret(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "w").write_bytes(SECRET.replace(b"host", b"mine"))
    manifest = scan(tmp_path / "out", "out", within=tmp_path)
    (tmp_path / "out" / "w").unlink()
    os.symlink(host / "token", tmp_path / "out" / "w")  # the job swaps it meanwhile
    store = CountingStore()

    push(manifest, tmp_path / "out", store, within=tmp_path)

    assert manifest.files == []
    assert not store.exists(digest_of(SECRET))


@pytest.mark.parametrize("planted", ["file", "fifo"])
def test_a_folder_swapped_for_a_link_after_the_scan_is_not_read_through(
    tmp_path: Path, planted: str
) -> None:
    host = _secret(tmp_path)
    if planted == "fifo":  # opening it for reading would wait for a writer forever
        (host / "token").unlink()
        os.mkfifo(host / "token")
    (tmp_path / "out" / "sub").mkdir(parents=True)
    (tmp_path / "out" / "sub" / "token").write_bytes(SECRET.replace(b"host", b"mine"))
    manifest = scan(tmp_path / "out", "out", within=tmp_path)
    shutil.rmtree(tmp_path / "out" / "sub")
    os.symlink(host, tmp_path / "out" / "sub")  # the job swaps the folder meanwhile
    store = LocalBlobStore(tmp_path / "store")  # one that takes files by moving them

    push(manifest, tmp_path / "out", store, within=tmp_path, move=True)

    assert manifest.files == []
    assert not store.exists(digest_of(SECRET))
    assert (host / "token").exists()  # nothing of the host was moved away either


@pytest.mark.parametrize("declared", ["../../x", "a/../../../x", "/etc"])
def test_a_spec_that_bypassed_the_server_checks_fails_before_it_starts(
    tmp_path: Path, fake_api: FakeRunnerApi, repo_ref: RepoRef, declared: str
) -> None:
    job = assign(repo_ref, "echo started > started")
    spec = job.spec.model_copy(update={"artifacts": [ArtifactSpec.model_construct(path=declared)]})
    with running(tmp_path, fake_api, CountingStore()):
        fake_api.assignments.put(job.model_copy(update={"spec": spec}))
        final = fake_api.wait_final("job-1")
    assert final.status is JobStatus.FAILED
    assert f"'{declared}'" in (final.message or "")
    assert not list(tmp_path.glob("runner/jobs/job-1/code/started"))


# --- the runner: nothing is written outside the job's folder -----------------------------
def _run_with_dep(
    tmp_path: Path, api: FakeRunnerApi, repo: RepoRef, manifest: Manifest
) -> JobStatus:
    store = CountingStore()
    store.put_bytes(b"evil\n", digest_of(b"evil\n"))
    job = assign(repo, "echo started > started")
    job.deps.append(
        DepArtifacts.model_construct(
            job_id="dep-job", run_name="old-dog-1", workflow_name="prepare", manifests=[manifest]
        )
    )
    with running(tmp_path, api, store):
        api.assignments.put(job)
        return api.wait_final("job-1").status


def _evil(path: str, *entries: str) -> Manifest:
    files = [_entry(e, b"evil\n") for e in entries]
    return Manifest.model_construct(path=path, files=files)  # as a hostile server sends it


@pytest.mark.parametrize(
    "manifest",
    [
        _evil("../../../escaped", "x"),
        _evil("data", "../../../../escaped/x"),
        _evil("data", "a", "a/b"),
        _evil("/abs/../../../../escaped", "x"),
    ],
)
def test_a_dependency_manifest_never_writes_outside_the_job(
    tmp_path: Path, fake_api: FakeRunnerApi, repo_ref: RepoRef, manifest: Manifest
) -> None:
    status = _run_with_dep(tmp_path, fake_api, repo_ref, manifest)

    assert status is JobStatus.FAILED
    assert not (tmp_path / "escaped").exists()
    assert not (tmp_path / "runner" / "escaped").exists()


def test_a_dependency_is_not_placed_through_a_link_in_the_code(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    for manifest in (_evil("data", "x"), _evil("ok", "in/x"), _evil("ok/in", "x")):
        here, api = tmp_path / manifest.path.replace("/", "_"), FakeRunnerApi()
        here.mkdir()
        repo = _repo_with_link(here, api, {"data": str(outside), "ok/in": "../ok2"})
        assert _run_with_dep(here, api, repo, manifest) is JobStatus.FAILED
    assert list(outside.iterdir()) == []


def test_place_refuses_an_entry_under_a_link_and_cp_keeps_within_the_target(
    tmp_path: Path,
) -> None:
    store = MemoryBlobStore()
    manifest = stored_manifest(store, "out", {"a/b": b"1"})
    target = tmp_path / "target"
    (target).mkdir()
    os.symlink(tmp_path, target / "a")

    with pytest.raises(UnsafePathError, match="symbolic link"):
        place(manifest, target, store)

    assert not (tmp_path / "b").exists()


def test_cp_refuses_a_manifest_the_server_should_not_have_sent(tmp_path: Path) -> None:
    from dstack.cli.artifacts import run_artifacts

    class Client:
        def get_artifacts(self, name: str) -> list[JobArtifacts]:
            entry = {"path": "f", "size": 1, "mode": 2**40, "digest": digest_of(b"x")}
            manifest = {"path": "out", "files": [entry]}
            data = {"job_id": "j", "run_name": name, "workflow_name": None, "manifests": [manifest]}
            return [JobArtifacts.model_validate(data)]

    with pytest.raises(StorageError, match="invalid manifest"):
        run_artifacts(Client(), "wise-cat-1")  # type: ignore[arg-type]


# --- the CLI: one line, exit 1, no run ---------------------------------------------------
@pytest.mark.parametrize(
    ("key", "value"), [("artifacts", "- ../secrets"), ("cache", "- path: ~/../../.ssh")]
)
def test_a_workflow_with_an_escaping_path_is_one_line_and_no_run(
    process_env: Env, key: str, value: str
) -> None:
    process_env.workflows(
        f"""
        workflows:
          - name: train
            provider: bash
            commands: [echo hi]
            {key}:
              {value}
        """
    )
    process_env.commit()

    result = process_env.dstack("run", "train")

    assert result.code == 1, result
    first, hint = result.err.splitlines()  # one line, and the hint
    assert first.startswith("Error: .dstack/workflows.yaml:5: workflow 'train': invalid"), result
    assert hint.startswith("Hint: ")
    assert "'..' component" in result.err
    assert "Traceback" not in result.err
    assert process_env.dstack("ps", "-a").out.count("train") == 0


# --- helpers ---------------------------------------------------------------------------
def _repo_with_link(tmp_path: Path, api: FakeRunnerApi, links: dict[str, str]) -> RepoRef:
    from tests.runner.conftest import git

    from dstack.repo import create_bundle

    root = tmp_path / "linked-repo"
    root.mkdir()
    git(root, "init", "-q")
    (root / "ok2").mkdir()
    (root / "ok2" / "keep").write_text("k")
    for name, target in links.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, root / name)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "links")
    commit = git(root, "rev-parse", "HEAD")
    bundle = tmp_path / "linked.bundle"
    create_bundle(root, commit, bundle)
    return RepoRef(
        repo_id="local/linked",
        commit=commit,
        tree=git(root, "rev-parse", "HEAD^{tree}"),
        bundle_digest=api.add_blob(bundle.read_bytes()),
    )
