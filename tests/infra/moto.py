"""`moto_server` on a loopback port as the S3 and EC2 endpoint of a test session."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
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

    def ec2_client(self, region: str = "us-east-1") -> Any:
        """A new boto3 EC2 client for this endpoint (the caller closes it)."""
        import boto3

        return boto3.session.Session(
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=region,
        ).client("ec2", endpoint_url=self.endpoint)

    @contextlib.contextmanager
    def refusing_credentials(self) -> Iterator[None]:
        """Within it moto checks credentials as AWS does, and refuses the fake ones
        (`AuthFailure`): its IAM knows no access key."""
        httpx.post(f"{self.endpoint}/moto-api/reset-auth", content=b"0", timeout=10)
        try:
            yield
        finally:
            httpx.post(f"{self.endpoint}/moto-api/reset-auth", content=b"inf", timeout=10)


def _answers(endpoint: str) -> bool:
    try:
        httpx.get(f"{endpoint}/moto-api/", timeout=1)
        return True
    except (httpx.HTTPError, OSError):
        return False


def _beside_python(name: str) -> str | None:
    # Installed into the interpreter's own bin dir, which may not be on PATH.
    return shutil.which(name, path=str(Path(sys.executable).parent))
