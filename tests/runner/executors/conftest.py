"""Docker fixtures shared by the Docker executor's tests and the executor contract suite."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dstack.runner.executors.docker import docker_client

IMAGE = "dstack-test/python:3.11"
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def test_image() -> str:
    subprocess.run(["bash", str(ROOT / "scripts" / "build-test-images.sh")], check=True)
    return IMAGE


@pytest.fixture
def client(test_image: str) -> Iterator[Any]:
    client = docker_client(required=True)
    assert client is not None  # required=True: an engine answers, or it raised
    yield client
    client.close()
