"""`ServerFollower`: a local runner looks for its server only while the server does not
answer, and follows it to the URL its `server.json` names."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from dstack.api.transport import Transport
from dstack.errors import ServerUnreachableError
from dstack.runner.follow import ServerFollower
from dstack.runner.settings import RunnerSettings


class _Runner:
    def __init__(self, tmp_path: Path) -> None:
        self.settings = RunnerSettings(
            server_url="http://127.0.0.1:1", token="t", work_dir=tmp_path
        )
        self.contact = time.monotonic()

    def is_idle(self) -> bool:
        return True

    def last_contact(self) -> float:
        return self.contact

    def shutdown(self) -> None:
        pass


def _wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def test_the_server_file_is_read_only_after_a_request_got_no_answer(tmp_path: Path) -> None:
    server_file = tmp_path / "server.json"
    server_file.write_text(json.dumps({"url": "http://127.0.0.1:1000"}))
    runner = _Runner(tmp_path)
    urls: list[str] = []
    follower = ServerFollower(
        runner, server_file, rebase=urls.append, orphan_exit_after=3600, interval=0.01
    ).start()
    try:
        assert _wait_for(lambda: urls == ["http://127.0.0.1:1000"])  # before the first answer
        runner.contact = time.monotonic() + 1  # the server answered
        time.sleep(0.1)
        server_file.write_text(json.dumps({"url": "http://127.0.0.1:2000"}))
        time.sleep(0.2)
        assert urls == ["http://127.0.0.1:1000"]  # in contact: nothing looked at

        transport = Transport("http://127.0.0.1:1", "token")
        transport.on_no_answer = follower.notice
        with transport, pytest.raises(ServerUnreachableError):
            transport.request("GET", "/api/health")
        assert _wait_for(lambda: urls[-1] == "http://127.0.0.1:2000")
    finally:
        follower.stop()


def test_no_answer_is_reported_for_every_try_of_a_retried_request() -> None:
    tries: list[int] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    transport = Transport(
        "http://server",
        "token",
        retry_for=0.05,
        backoff=0.01,
        transport=httpx.MockTransport(refuse),
        sleep=lambda _: None,
    )
    transport.on_no_answer = lambda: tries.append(1)
    with pytest.raises(ServerUnreachableError):
        transport.request("GET", "/api/health")
    assert len(tries) > 1
