"""A job cannot reach its runner: not its environment, not its files, not its Python.

Attacks of issue #13 ("Job environment"): a process job printed `DSTACK_RUNNER_TOKEN` with
`env`, and its `pip install` changed dstack's own installation. These tests run as root, so
the local runner runs process jobs as `dstack-job`: that is the path they exercise.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.e2e.conftest import Env, _stop_server, make_env

from dstack.runner.environment import host_env

# Put into the CLI's environment: the local server and its runner inherit it, a job must not.
PROBE = "DSTACK_PROBE_RUNNER_ONLY"
RUNNER_VARIABLES = ("DSTACK_RUNNER_TOKEN", "DSTACK_HOME", "PYTHONPATH", PROBE)


def _run(env: Env, *commands: str, workflow: str = "probe") -> str:
    """Run one bash workflow of `commands`; its output (the run must succeed)."""
    lines = "\n".join(f"              - {json_quote(c)}" for c in commands)
    env.workflows(
        f"""
        workflows:
          - name: {workflow}
            provider: bash
            commands:
{lines}
        """
    )
    env.commit()
    result = env.dstack("run", workflow, timeout=180)
    assert result.code == 0, result
    return result.out


def json_quote(text: str) -> str:
    """A YAML scalar for `text` (JSON strings are YAML)."""
    return json.dumps(text)


@pytest.fixture(params=["process", pytest.param("docker", marks=pytest.mark.docker)])
def leaky_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    """A user whose environment (so the local server's and runner's) holds a probe."""
    env = make_env(tmp_path, request.param)
    env.extra_env[PROBE] = "runner-secret"
    try:
        yield env
    finally:
        _stop_server(env.home)


@pytest.fixture
def process_user(tmp_path: Path) -> Iterator[Env]:
    """A user of the process executor (its runner, started as root, has a job user)."""
    env = make_env(tmp_path, "process")
    try:
        yield env
    finally:
        _stop_server(env.home)


def test_env_in_a_job_shows_none_of_the_runners_variables(leaky_env: Env) -> None:
    out = _run(leaky_env, "env", "echo end-of-env")

    assert "end-of-env" in out
    for name in RUNNER_VARIABLES:
        assert f"{name}=" not in out, name
    assert "runner-secret" not in out
    assert "DSTACK_RUN_NAME=" in out  # the job's own variables are there


def test_the_job_cannot_read_the_runners_environment_from_proc(process_user: Env) -> None:
    process_user.extra_env[PROBE] = "runner-secret"
    # The job's bash is the runner's child: its parent's environ, then every process's.
    out = _run(
        process_user,
        "cat /proc/$PPID/environ >/dev/null 2>&1 && echo PARENT-READ || echo parent-denied",
        "cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep -c DSTACK_RUNNER_TOKEN"
        " || true",
        "id -un",
    )

    assert "parent-denied" in out
    assert "PARENT-READ" not in out
    assert out.splitlines()[1] == "0"
    assert "runner-secret" not in out
    assert out.splitlines()[2] == "dstack-job"


@pytest.fixture
def open_env() -> Iterator[Env]:
    """A process env whose home every user may enter (pytest's temp folders are 0700,
    which alone would keep a job out): only the runner's own modes protect it."""
    base = Path(tempfile.mkdtemp(prefix="dstack-open-", dir="/var/tmp"))
    os.chmod(base, 0o755)
    env = make_env(base, "process")
    os.chmod(env.repo, 0o755)
    try:
        yield env
    finally:
        _stop_server(env.home)
        shutil.rmtree(base, ignore_errors=True)


def test_the_job_cannot_read_the_runners_files(open_env: Env) -> None:
    # A work dir left world-readable (by an older version), with a credential in it.
    work_dir = open_env.home / "runner"
    work_dir.mkdir(parents=True)
    os.chmod(open_env.home, 0o755)
    os.chmod(work_dir, 0o755)
    credential = work_dir / "credential.json"
    credential.write_text('{"token": "dsr_secret"}')
    credential.chmod(0o644)

    out = _run(
        open_env,
        f"ls {work_dir} >/dev/null 2>&1 && echo WORKDIR-LISTED || echo workdir-denied",
        f"cat {credential} 2>/dev/null || echo cred-denied",
        f"ls {open_env.home / 'server'} >/dev/null 2>&1 && echo SERVER-LISTED || echo denied",
    )

    assert out.splitlines()[:3] == ["workdir-denied", "cred-denied", "denied"]
    assert stat.S_IMODE(work_dir.stat().st_mode) == 0o700


def test_host_env_keeps_the_allowlist_only() -> None:
    environ = {
        "PATH": f"/opt/runner-venv/bin:/usr/bin:{os.path.dirname(sys.executable)}",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "https_proxy": "http://proxy:3128",
        "DSTACK_RUNNER_TOKEN": "dsr_secret",
        "AWS_SECRET_ACCESS_KEY": "aws",
        "VIRTUAL_ENV": "/opt/runner-venv",
        "PYTHONPATH": "/opt/dstack/src",
    }

    env = host_env(environ, drop_dirs=frozenset({"/opt/runner-venv/bin"}))

    assert env == {
        "PATH": f"/usr/bin:{os.path.dirname(sys.executable)}",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "https_proxy": "http://proxy:3128",
    }


def _wheel(directory: Path, name: str = "tinyprobe") -> Path:
    """A pure-Python wheel of one module, built by hand (no network, no build backend)."""
    files = {
        f"{name}.py": b"VALUE = 'installed by a job'\n",
        f"{name}-1.0.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n".encode()
        ),
        f"{name}-1.0.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = [
        f"{path},sha256={_urlsafe(hashlib.sha256(data).digest())},{len(data)}"
        for path, data in files.items()
    ]
    files[f"{name}-1.0.dist-info/RECORD"] = (
        "\n".join([*record, f"{name}-1.0.dist-info/RECORD,,"]) + "\n"
    ).encode()
    wheel = directory / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return wheel


def _urlsafe(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _importable(python: str, module: str) -> bool:
    probe = subprocess.run([python, "-c", f"import {module}"], capture_output=True, check=False)
    return probe.returncode == 0


def test_pip_install_in_a_job_stays_in_the_job(process_user: Env) -> None:
    wheel = _wheel(process_user.repo)
    out = _run(
        process_user,
        f"pip install -q --no-index {wheel.name}",
        "python -c 'import tinyprobe; print(tinyprobe.VALUE)'",
        "python3 -c 'import sys; print(sys.prefix != sys.base_prefix)'",
    )

    assert "installed by a job" in out
    assert "True" in out  # the job's python is a virtualenv
    assert not _importable(sys.executable, "tinyprobe")  # dstack's own Python
    assert not _importable("/usr/bin/python3", "tinyprobe")
    # Nor does the next job see it.
    again = _run(
        process_user,
        "python -c 'import tinyprobe' 2>/dev/null && echo STILL-THERE || echo gone",
        workflow="again",
    )
    assert "gone" in again


def test_a_job_aiming_pip_at_the_base_interpreter_cannot_change_it(process_user: Env) -> None:
    wheel = _wheel(process_user.repo, "tinybase")
    # The job names its interpreter's base Python itself, and asks pip to ignore PEP 668.
    out = _run(
        process_user,
        'BASE=$(python -c "import sys; print(sys._base_executable)")',
        # (pip falls back to a user install: into the job's own HOME)
        f"$BASE -m pip install -q --no-index --break-system-packages {wheel.name} || true",
        f"{sys.executable} -c pass 2>/dev/null && echo RUNNER-PYTHON-RUNS || echo no-runner-python",
    )

    assert not _importable(sys.executable, "tinybase")
    assert not _importable("/usr/bin/python3", "tinybase")
    assert "no-runner-python" in out  # the runner's interpreter is under root's home


@pytest.mark.docker
def test_a_container_sees_no_runner_variable_nor_file(tmp_path: Path) -> None:
    env = make_env(tmp_path, "docker")
    env.extra_env[PROBE] = "runner-secret"
    try:
        out = _run(
            env,
            "env",
            f"ls {env.home} >/dev/null 2>&1 && echo HOME-VISIBLE || echo no-home",
            "cat /proc/1/environ | tr '\\0' '\\n' | grep -c DSTACK_RUNNER_TOKEN || true",
        )
    finally:
        _stop_server(env.home)

    for name in RUNNER_VARIABLES:
        assert f"{name}=" not in out, name
    assert "runner-secret" not in out
    assert "no-home" in out
    assert out.splitlines()[-1] == "0"


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")


@needs_root
def test_handing_a_job_its_folders_never_gives_it_a_runner_file(tmp_path: Path) -> None:
    from dstack.runner.jobuser import DEFAULT_JOB_USER, hand_over, resolve_job_user

    user = resolve_job_user(DEFAULT_JOB_USER)
    assert user is not None
    runner_file = tmp_path / "credential.json"
    runner_file.write_text("secret")
    shared_object = tmp_path / "kept-checkout-object"
    shared_object.write_text("git object")
    code = tmp_path / "job" / "code"
    (code / "sub").mkdir(parents=True)
    (code / "sub" / "train.py").write_text("print(1)")
    (code / "link-to-credential").symlink_to(runner_file)  # a symlink chain in the code
    (code / "sub" / "chain").symlink_to(code / "link-to-credential")
    os.link(shared_object, code / "object")  # the checkout cache shares git objects

    hand_over([code], user)

    assert (code / "sub" / "train.py").stat().st_uid == user.uid
    assert _mode(code) == 0o700
    assert runner_file.stat().st_uid == 0
    assert shared_object.stat().st_uid == 0
    assert (code / "link-to-credential").lstat().st_uid == user.uid


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)
