"""Project-wide test setup: Docker availability policy and hermetic git identity."""

from __future__ import annotations

import functools
import os

import pytest


@functools.cache
def docker_available() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked `docker` skip without an engine — except in CI, where they must fail."""
    if item.get_closest_marker("docker") is None or docker_available():
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("this test needs a Docker engine and none answers (CI=true: not skipping)")
    pytest.skip("needs a Docker engine")


@pytest.fixture(autouse=True)
def _git_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME"):
        monkeypatch.setenv(var, "Test User")
    for var in ("GIT_AUTHOR_EMAIL", "GIT_COMMITTER_EMAIL"):
        monkeypatch.setenv(var, "test@example.com")
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
