"""`moto_server` on a loopback port as the S3 endpoint of a test session."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from tests.infra.postgres import free_port

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class MotoUnavailable(Exception):
    """`moto_server` is not installed or did not answer."""


class MotoServer:
    """`start()` → `endpoint` answers S3 (and the other AWS APIs moto has); `stop()`."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None
        self._client: Any = None

    def start(self) -> None:
        executable = shutil.which("moto_server") or _beside_python("moto_server")
        if executable is None:
            raise MotoUnavailable("moto_server is not installed (pip install 'moto[server]')")
        self._process = subprocess.Popen(
            [executable, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise MotoUnavailable(f"moto_server exited with {self._process.returncode}")
            if _answers(self.endpoint):
                return
            time.sleep(0.05)
        self.stop()
        raise MotoUnavailable("moto_server did not answer within 20 s")

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def client(self) -> Any:
        """A boto3 S3 client for this endpoint (one per server, closed by `stop`)."""
        if self._client is None:
            from dstack.storage.s3 import make_client

            self._client = make_client(self.endpoint)
        return self._client


def _answers(endpoint: str) -> bool:
    try:
        httpx.get(f"{endpoint}/moto-api/", timeout=1)
        return True
    except (httpx.HTTPError, OSError):
        return False


def _beside_python(name: str) -> str | None:
    # Installed into the interpreter's own bin dir, which may not be on PATH.
    return shutil.which(name, path=str(Path(sys.executable).parent))
