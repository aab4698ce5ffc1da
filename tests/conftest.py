"""Project-wide test setup: Docker availability policy and hermetic git identity."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from pathlib import Path

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


def pytest_addoption(parser: pytest.Parser) -> None:
    # Here, in the root conftest, so that pytest accepts it however the run is started.
    parser.addoption(
        "--faults-sweep",
        type=int,
        default=0,
        metavar="SEEDS",
        help="tests/faults: kill at the points of seeds 0..SEEDS-1 instead of the CI seed",
    )


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


@pytest.fixture(autouse=True, scope="session")
def _isolated_dstack_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No test ever touches the user's ~/.dstack: a local server a test starts without a home
    of its own lives in this one, and is stopped when the session ends."""
    home = tmp_path_factory.mktemp("dstack-home")
    run_dir = tmp_path_factory.mktemp("run")
    run_dir.chmod(0o700)
    previous = {name: os.environ.get(name) for name in ("DSTACK_HOME", "XDG_RUNTIME_DIR")}
    os.environ["DSTACK_HOME"] = str(home)
    os.environ["XDG_RUNTIME_DIR"] = str(run_dir)  # the CLI's command servers: ours only
    yield
    from dstack.server.local import stop_local_server

    stop_local_server(home)
    _stop_command_servers(run_dir)
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _stop_command_servers(run_dir: Path) -> None:
    """Stop the session's command servers, one still starting (no lock yet) too."""
    import psutil

    from dstack.cli.warm import stop_servers

    stop_servers(str(run_dir / f"dstack-cli-{os.getuid()}"))
    for proc in psutil.process_iter(["cmdline"]):
        line = proc.info["cmdline"] or []
        if any("dstack.cli.warm import serve" in part for part in line) and any(
            part.startswith(str(run_dir)) for part in line
        ):
            with contextlib.suppress(psutil.Error):
                proc.kill()
