from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import pytest
from tests.runner.conftest import Output, make_context

from dstack.models.job import JobSpec, TerminationReason
from dstack.models.logs import LogStream
from dstack.runner.errors import JobStartError
from dstack.runner.executors.process import ProcessExecutor


def _spec(*commands: str, **kwargs: object) -> JobSpec:
    return JobSpec(provider="bash", commands=list(commands), **kwargs)


def _run(tmp_path: Path, spec: JobSpec, **kwargs: object) -> tuple[int, Output]:
    output = Output()
    handle = ProcessExecutor().start(make_context(tmp_path, spec, output, **kwargs))  # type: ignore[arg-type]
    result = handle.wait(30)
    assert result is not None
    handle.cleanup()
    return result.exit_code, output


def _wait_for(predicate: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_commands_run_in_the_working_dir_with_env(tmp_path: Path) -> None:
    spec = _spec("pwd", "echo $GREETING", working_dir="src")
    code, output = _run(tmp_path, spec, env={"GREETING": "hi"})
    assert code == 0
    assert output.text(LogStream.STDOUT) == f"{tmp_path / 'job' / 'code' / 'src'}\nhi\n"


def test_a_command_that_is_not_found_fails_the_job(tmp_path: Path) -> None:
    code, output = _run(tmp_path, _spec("no-such-command-xyz", "echo after"))
    assert code == 127
    assert "no-such-command-xyz" in output.text(LogStream.STDERR)


def test_both_streams_are_read_to_their_ends_whichever_closes_first(tmp_path: Path) -> None:
    """One reader drains stdout and stderr (a job that closes one keeps writing the other,
    and much of both arrives in full)."""
    spec = _spec(
        "exec 1>&-",  # stdout closed: what follows goes to stderr only
        "head -c 300000 /dev/zero | tr '\\0' e >&2",
        "echo last >&2",
    )
    code, output = _run(tmp_path, spec)
    assert code == 0
    assert output.text(LogStream.STDOUT) == ""
    assert output.text(LogStream.STDERR) == "e" * 300000 + "last\n"
    spec = _spec("head -c 300000 /dev/zero | tr '\\0' o", "echo; echo err >&2", "echo end")
    code, output = _run(tmp_path / "second", spec)
    assert code == 0
    assert output.text(LogStream.STDOUT) == "o" * 300000 + "\nend\n"
    assert output.text(LogStream.STDERR) == "err\n"


def test_abort_kills_the_job_and_its_children(tmp_path: Path) -> None:
    output = Output()
    spec = _spec("sleep 300 &", "echo child=$!", "sleep 300")
    handle = ProcessExecutor().start(make_context(tmp_path, spec, output))
    _wait_for(lambda: "child=" in output.text(LogStream.STDOUT))
    child = int(output.text(LogStream.STDOUT).split("child=")[1])
    assert psutil.pid_exists(child)
    handle.kill()
    result = handle.wait(10)
    assert result is not None
    assert result.exit_code == 137
    _wait_for(lambda: not _alive(child))


def test_children_left_running_end_with_the_job(tmp_path: Path) -> None:
    code, output = _run(tmp_path, _spec("sleep 300 &", "echo child=$!"))
    assert code == 0
    child = int(output.text(LogStream.STDOUT).split("child=")[1])
    _wait_for(lambda: not _alive(child))


def test_a_missing_python_version_warns_and_uses_the_default(tmp_path: Path) -> None:
    code, output = _run(tmp_path, _spec("python3 -c 'print(42)'", python="3.99"))
    assert code == 0
    assert output.text(LogStream.STDOUT) == "42\n"
    assert any("python 3.99 is not installed" in notice for notice in output.notices)


def test_the_requested_python_version_comes_first_on_path(tmp_path: Path) -> None:
    version = "3.11"
    code, output = _run(
        tmp_path,
        _spec(
            "python -c 'import sys; print(sys.version_info[:2])'", "pip --version", python=version
        ),
    )
    assert code == 0, output.text(LogStream.STDERR)
    stdout = output.text(LogStream.STDOUT)
    assert stdout.startswith("(3, 11)\n")
    assert "python 3.11" in stdout


def test_requirements_get_a_venv_of_their_own(tmp_path: Path) -> None:
    spec = _spec(
        "pip install -q -r requirements.txt",
        "python -c 'import sys; print(sys.prefix)'",
        requirements="requirements.txt",
    )
    context_dir = tmp_path / "job" / "code"
    context_dir.mkdir(parents=True)
    (context_dir / "requirements.txt").write_text("")
    code, output = _run(tmp_path, spec)
    assert code == 0, output.text(LogStream.STDERR)
    assert output.text(LogStream.STDOUT).strip() == str(tmp_path / "job" / "venv")


def test_an_image_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    spec = JobSpec(provider="docker", workflow_name="train", image="ubuntu:22.04", commands=["x"])
    with pytest.raises(JobStartError) as err:
        ProcessExecutor().start(make_context(tmp_path, spec, Output()))
    assert err.value.reason is TerminationReason.EXECUTOR_ERROR
    assert str(err.value) == (
        "this runner has no Docker: workflow 'train' needs image ubuntu:22.04 — "
        "start the runner where Docker is available or remove `image`"
    )


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


assert os.name == "posix"
