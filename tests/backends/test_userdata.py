"""The user-data script cloud instances boot with: its text, and bash running it — with a
stand-in `dstack-runner` or `python3` on PATH, and with the real runner against a live
server."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from tests.infra.boot import free_port, serve

from dstack import __version__
from dstack.backends.memory import MemoryCompute
from dstack.backends.userdata import runner_labels, user_data
from dstack.server.settings import ServerSettings

NASTY = 'tok\'en $(touch /tmp/pwned) "x" `id`'


def _argv(script: str) -> list[str]:
    line = next(x for x in script.splitlines() if x.startswith("set -- "))
    return shlex.split(line)[2:]


def test_every_value_is_quoted_and_reaches_the_runner_intact() -> None:
    labels = {"backend": "aws", "instance": "dstack-1 ; rm -rf /"}
    script = user_data("http://h:3000/a b", NASTY, "dstack-1", labels, "1.2.3")

    assert _argv(script) == [
        "dstack-runner",
        "start",
        "--server",
        "http://h:3000/a b",
        "--token",
        NASTY,
        "--name",
        "dstack-1",
        "--labels",
        "backend=aws,instance=dstack-1 ; rm -rf /",
    ]
    assert "pip install --quiet dstack==1.2.3" in script
    assert "if ! command -v dstack-runner" in script
    assert script.rstrip().endswith('exec "$@"')
    assert "DSTACK_RUNNER_METADATA_URL" not in script.split("set -- ")[0]


def test_labels_say_backend_instance_type_and_market() -> None:
    assert runner_labels("aws", "dstack-1", "g4dn.xlarge", True) == {
        "backend": "aws",
        "instance": "dstack-1",
        "instance-type": "g4dn.xlarge",
        "spot": "true",
    }


def _stand_in(bin_dir: Path, name: str, body: str) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / name
    path.write_text(f"#!/bin/bash\n{body}\n")
    path.chmod(0o755)


def _run(script: str, tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "user-data.sh"
    path.write_text(script)
    return subprocess.run(["bash", str(path)], env=env, capture_output=True, text=True, timeout=60)


RECORD = """python3 - "$@" <<'EOF'
import json, os, sys
keep = ("DSTACK_HOME", "DSTACK_RUNNER_METADATA_URL")
print(json.dumps({"argv": sys.argv[1:], "env": {k: os.environ.get(k) for k in keep}}))
EOF"""


@pytest.mark.parametrize(
    ("preset", "expected"),
    [(None, "http://169.254.169.254"), ("http://127.0.0.1:9/meta", "http://127.0.0.1:9/meta")],
)
def test_the_runner_starts_with_the_environment_it_was_given(
    tmp_path: Path, preset: str | None, expected: str
) -> None:
    bin_dir = tmp_path / "bin"
    _stand_in(bin_dir, "dstack-runner", RECORD)
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "DSTACK_HOME": str(tmp_path / "dh"),
    }
    if preset:
        env["DSTACK_RUNNER_METADATA_URL"] = preset
    script = user_data("http://s", NASTY, "n", {}, "1.0", "http://169.254.169.254")

    result = _run(script, tmp_path, env)

    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["argv"][:6] == ["start", "--server", "http://s", "--token", NASTY, "--name"]
    assert seen["env"] == {
        "DSTACK_HOME": str(tmp_path / "dh"),
        "DSTACK_RUNNER_METADATA_URL": expected,
    }


def test_dstack_is_installed_when_the_runner_is_missing(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    # A `python3` whose pip "installs" a dstack-runner that says it ran.
    _stand_in(
        bin_dir,
        "python3",
        f'echo "$@" >> {tmp_path}/pip.log\n'
        f"printf '#!/bin/bash\\necho runner started \"$@\"\\n' > {bin_dir}/dstack-runner\n"
        f"chmod +x {bin_dir}/dstack-runner",
    )
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)}

    result = _run(user_data("http://s", "t", "n", {}, "9.9.9"), tmp_path, env)

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "pip.log").read_text() == "-m pip install --quiet dstack==9.9.9\n"
    assert result.stdout.startswith("runner started start --server http://s")


def test_with_dstack_on_path_nothing_is_installed(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    _stand_in(bin_dir, "python3", f"touch {tmp_path}/pip-ran")
    _stand_in(bin_dir, "dstack-runner", "echo ok")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)}

    result = _run(user_data("http://s", "t", "n", {}, "9.9.9"), tmp_path, env)

    assert (result.returncode, result.stdout) == (0, "ok\n")
    assert not (tmp_path / "pip-ran").exists()


def test_a_real_runner_boots_from_it_and_registers(tmp_path: Path) -> None:
    settings = ServerSettings(
        home=tmp_path / "server",
        token="admin-token",
        runner_token="registration-token",
        port=free_port(),
    )
    twin = MemoryCompute()
    instance_home = tmp_path / "instance"
    env = dict(
        os.environ,
        HOME=str(instance_home),
        DSTACK_HOME=str(instance_home / ".dstack"),
        DOCKER_HOST="unix:///nonexistent/docker.sock",
        PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    )
    labels = runner_labels("aws", "booted", "m5.large", False)
    script = user_data(settings.url, "registration-token", "booted", labels, __version__)
    (tmp_path / "user-data.sh").write_text(script)
    with serve(settings, lambda config, credentials: twin) as url:
        proc = subprocess.Popen(
            ["bash", str(tmp_path / "user-data.sh")],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            runner = _wait_for_runner(url, "booted", proc)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    assert runner["labels"] == labels
    assert runner["status"] == "ready"
    assert (instance_home / ".dstack" / "runner" / "credential.json").exists()


def _wait_for_runner(url: str, name: str, proc: subprocess.Popen[bytes]) -> dict[str, object]:
    headers = {"Authorization": "Bearer admin-token"}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the user-data script exited"
        found = [
            r for r in httpx.get(f"{url}/api/runners", headers=headers).json() if r["name"] == name
        ]
        if found:
            runner: dict[str, object] = found[0]
            return runner
        time.sleep(0.2)
    raise AssertionError(f"runner {name} did not register")
