from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.runner.conftest import Output, make_context

from dstack.models.job import JobSpec, TerminationReason
from dstack.models.logs import LogStream
from dstack.models.resources import ResourcesSpec
from dstack.providers.images import ImageSettings
from dstack.runner.environment import free_port
from dstack.runner.errors import JobStartError
from dstack.runner.executors.base import JobLaunch, RunnerIdentity
from dstack.runner.executors.docker import DockerExecutor, DockerHandle

from .conftest import IMAGE

pytestmark = pytest.mark.docker


@pytest.fixture
def executor(client: Any, request: pytest.FixtureRequest) -> Iterator[DockerExecutor]:
    name = f"test-{request.node.name[:40]}-{time.monotonic_ns()}"
    owner = RunnerIdentity(runner_id=name, server_id="test-executors")
    executor = DockerExecutor(client, images=ImageSettings(default_image=IMAGE))
    executor.reconcile(owner, owned_job_ids=set())
    yield executor
    executor.reconcile(owner, owned_job_ids=set())


def _spec(*commands: str, **kwargs: Any) -> JobSpec:
    return JobSpec(provider="bash", workflow_name="train", commands=list(commands), **kwargs)


def _start(
    executor: DockerExecutor, tmp_path: Path, spec: JobSpec, **kw: Any
) -> tuple[DockerHandle, Output, JobLaunch]:
    output = Output()
    context = make_context(tmp_path, spec, output, **kw)
    return executor.start(context), output, context


def _wait_for(predicate: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_commands_run_in_the_image_with_code_env_and_working_dir(
    executor: DockerExecutor, tmp_path: Path
) -> None:
    spec = _spec(
        "pwd",
        "cat hello.txt",
        "echo $GREETING",
        "python -c 'import ssl'",
        "echo err >&2",
        working_dir="sub",
    )
    (tmp_path / "job" / "code" / "sub").mkdir(parents=True)
    (tmp_path / "job" / "code" / "sub" / "hello.txt").write_text("from the repo\n")
    handle, output, _ = _start(executor, tmp_path, spec, env={"GREETING": "hi"})
    result = handle.wait(60)
    handle.cleanup()
    assert result is not None
    assert result.exit_code == 0, output.text(LogStream.STDERR)
    assert output.text(LogStream.STDOUT) == "/workflow/sub\nfrom the repo\nhi\n"
    assert output.text(LogStream.STDERR) == "err\n"


def test_ports_are_published_on_loopback(executor: DockerExecutor, tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "job" / "code").mkdir(parents=True)
    (tmp_path / "job" / "code" / "index.html").write_text("served\n")
    spec = _spec("python -m http.server $PORT_0 --bind 0.0.0.0")
    output = Output()
    context = make_context(tmp_path, spec, output, env={"PORT_0": str(port)})
    context = JobLaunch(**{**context.__dict__, "host_ports": [port]})
    handle = executor.start(context)
    try:
        body = b""
        deadline = time.monotonic() + 20
        while not body:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=2) as r:
                    body = r.read()
            except OSError:
                assert time.monotonic() < deadline, output.text(LogStream.STDERR)
                time.sleep(0.1)
        assert body == b"served\n"
        ports = executor._client.api.inspect_container(handle.container_id)["HostConfig"][
            "PortBindings"
        ]
        assert ports == {f"{port}/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
    finally:
        handle.cleanup()


def test_stop_reaches_the_jobs_own_process(executor: DockerExecutor, tmp_path: Path) -> None:
    script = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: (print('got TERM', flush=True), sys.exit(0)))\n"
        "print('ready', flush=True)\n"
        "time.sleep(300)\n"
    )
    (tmp_path / "job" / "code").mkdir(parents=True)
    (tmp_path / "job" / "code" / "serve.py").write_text(script)
    handle, output, _ = _start(executor, tmp_path, _spec("python serve.py"))
    _wait_for(lambda: "ready" in output.text(LogStream.STDOUT))
    handle.stop(grace=10)
    result = handle.wait(30)
    handle.cleanup()
    assert result is not None
    assert "got TERM" in output.text(LogStream.STDOUT)


def test_oom_is_reported_as_oom(executor: DockerExecutor, tmp_path: Path) -> None:
    spec = _spec(
        "python -c 'x = bytearray(512 * 1024 * 1024); print(len(x))'",
        resources=ResourcesSpec(memory_mib=64),
    )
    handle, _, _ = _start(executor, tmp_path, spec)
    result = handle.wait(60)
    handle.cleanup()
    assert result is not None
    assert result.reason is TerminationReason.OOM


def test_a_missing_image_fails_as_image_pull(executor: DockerExecutor, tmp_path: Path) -> None:
    spec = _spec("true", image="dstack-test/does-not-exist:1")
    with pytest.raises(JobStartError) as err:
        _start(executor, tmp_path, spec)
    assert err.value.reason is TerminationReason.IMAGE_PULL
    assert str(err.value).startswith(
        "cannot pull image dstack-test/does-not-exist:1 for workflow 'train': "
    )
    assert "\n" not in str(err.value)


def test_leftover_containers_are_removed_on_restart(
    client: Any, executor: DockerExecutor, tmp_path: Path
) -> None:
    handle, output, _ = _start(executor, tmp_path, _spec("echo ready", "sleep 300"))
    _wait_for(lambda: "ready" in output.text(LogStream.STDOUT))
    # The same runner of the same server, restarted, owns no jobs yet: the container must go.
    owner = executor.owner
    assert owner is not None
    DockerExecutor(client).reconcile(owner, owned_job_ids=set())
    result = handle.wait(30)
    assert result is not None
    label = f"dstack.runner-id={owner.runner_id}"
    assert client.containers.list(all=True, filters={"label": label}) == []
