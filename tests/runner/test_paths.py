from __future__ import annotations

from pathlib import Path

import pytest

from dstack.api.blobs import HttpBlobStore
from dstack.api.runner import RunnerClient
from dstack.api.runner_fake import FakeRunnerApi
from dstack.models.artifacts import StorageAccess
from dstack.runner.blobs import open_blob_store
from dstack.runner.errors import JobStartError
from dstack.runner.paths import container_path, job_paths
from dstack.storage.base import is_local
from dstack.storage.local import LocalBlobStore


def test_relative_paths_are_in_the_working_dir_for_every_executor(tmp_path: Path) -> None:
    for executor in ("docker", "process"):
        paths = job_paths(["model/"], job_dir=tmp_path, working_dir=tmp_path / "code" / "src",
                          executor=executor)  # fmt: skip
        assert paths.host_path("model/") == tmp_path / "code" / "src" / "model"
        assert paths.inside_job_dir("model/")


def test_docker_binds_a_job_folder_at_each_absolute_or_home_path(tmp_path: Path) -> None:
    declared = ["~/.cache/pip", "/output", "/output/logs", "~/.cache/pip/wheels", "data"]
    paths = job_paths(declared, job_dir=tmp_path, working_dir=tmp_path / "code", executor="docker")
    assert paths.mounts == {
        tmp_path / "mounts" / "0": "/output",
        tmp_path / "mounts" / "1": "/root/.cache/pip",
    }
    assert paths.host_path("/output/logs") == tmp_path / "mounts" / "0" / "logs"
    assert paths.host_path("~/.cache/pip/wheels") == tmp_path / "mounts" / "1" / "wheels"
    assert paths.home is None
    assert all(paths.inside_job_dir(p) for p in declared)


def test_a_process_job_has_its_own_home_and_no_host_absolute_paths(tmp_path: Path) -> None:
    paths = job_paths(["~/.cache/pip"], job_dir=tmp_path, working_dir=tmp_path / "code",
                      executor="process")  # fmt: skip
    assert paths.home == tmp_path / "home"
    assert paths.host_path("~/.cache/pip") == tmp_path / "home" / ".cache" / "pip"
    assert paths.host_path("~") == tmp_path / "home"
    assert paths.mounts == {}
    with pytest.raises(JobStartError, match="'/output' is absolute"):
        job_paths(["/output"], job_dir=tmp_path, working_dir=tmp_path / "code",
                  executor="process")  # fmt: skip


def test_container_paths_expand_home_to_root() -> None:
    assert container_path("~") == "/root"
    assert container_path("~/x/../y/") == "/root/y"
    assert container_path("/data//in") == "/data/in"


def test_a_store_folder_the_runner_can_write_is_used_directly(tmp_path: Path) -> None:
    store = open_blob_store(StorageAccess(kind="local", path=str(tmp_path)), FakeRunnerApi())
    assert isinstance(store, LocalBlobStore)
    assert store.root == tmp_path
    assert is_local(store)


@pytest.mark.parametrize("kind", ["local", "http"])
def test_otherwise_blobs_go_through_the_server(tmp_path: Path, kind: str) -> None:
    access = StorageAccess(kind=kind, path=str(tmp_path / "not-here"))
    with RunnerClient("http://server", "t") as api:
        store = open_blob_store(access, api)
        assert isinstance(store, HttpBlobStore)
        assert not is_local(store)
