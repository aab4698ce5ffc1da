"""`torchrun`, `.dstack/providers.yaml` and provider packages, run for real with the process
executor through the real CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from tests.providers.test_torchrun import fake_torchrun

if TYPE_CHECKING:
    from tests.e2e.conftest import Env, Result

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "dstack-provider-hello"


def test_torchrun_runs_the_script_through_torchrun(process_env: Env) -> None:
    env = process_env
    # Jobs run as another user when the runner is root: the folder must be open to it.
    folder = Path(tempfile.mkdtemp(prefix="dstack-torchrun-"))
    folder.chmod(0o755)
    env.extra_env["PATH"] = f"{fake_torchrun(folder / 'bin')}:{os.environ['PATH']}"
    (folder / "bin").chmod(0o755)
    env.workflows(
        """
        workflows:
          - name: ddp
            provider: torchrun
            script: train.py
            args: [--epochs, 2]
            resources:
              gpu: 0
        """
    )
    env.write("train.py", "import sys\nprint('training', sys.argv[1:])\n")
    env.commit()

    result = env.dstack("run", "ddp", "--lr", "0.1")

    assert result.code == 0, result
    assert (
        "torchrun args: --standalone --nnodes 1 --nproc_per_node 1 train.py --epochs 2 --lr 0.1"
        in result.out
    )
    assert "training ['--epochs', '2', '--lr', '0.1']" in result.out
    shutil.rmtree(folder)


def test_a_provider_of_providers_yaml_runs_with_the_workflows_keys(process_env: Env) -> None:
    """Without `image` (the process executor runs none): the default one, as for bash."""
    env = process_env
    env.write(
        ".dstack/providers.yaml",
        """
        providers:
          - name: fetch
            commands:
              - mkdir -p out
              - echo "fetched $URL for $WHO" > out/result.txt
              - cat out/result.txt
            artifacts:
              - out
        """,
    )
    env.workflows(
        """
        workflows:
          - name: get
            provider: fetch
            url: https://example.com/${{ file }}
            env:
              - WHO=tests
        """
    )
    env.write(".dstack/variables.yaml", "variables:\n  get:\n    file: a.txt\n")
    env.commit()

    listed = env.dstack("workflows")
    assert listed.code == 0, listed
    assert listed.out.splitlines()[1].split() == ["get", "fetch", "providers.yaml"]

    result = env.dstack("run", "get", "--file", "b.txt")

    assert result.code == 0, result
    assert "fetched https://example.com/b.txt for tests" in result.out
    run = json.loads(env.dstack("ps", "--json").out)[0]
    artifacts = env.dstack("ls", run["name"], "-r")
    assert "result.txt" in artifacts.out, artifacts


# --- provider packages ---------------------------------------------------------------------


def _venv(path: Path) -> Path:
    """A virtualenv seeing this Python's packages (dstack, pip, and the setuptools of the test
    dependencies: a venv's own bundled setuptools 65 could not build the package offline)."""
    command = [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(path)]
    subprocess.run(command, check=True)
    return path / "bin" / "python"


def install(python: Path, project: Path) -> None:
    """A real `pip install` of `project`, offline, with the setuptools of the test
    dependencies (70.1 or later builds wheels without the `wheel` package)."""
    proc = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            str(project),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _dstack(python: Path, env: Env, *args: str) -> Result:
    from tests.e2e.conftest import Result

    proc = subprocess.run(
        [str(python), "-m", "dstack", *args],
        cwd=env.repo,
        env=env.environ(),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def test_an_installed_provider_package_works_everywhere(process_env: Env, tmp_path: Path) -> None:
    env = process_env
    python = _venv(tmp_path / "venv")
    install(python, EXAMPLE)
    env.workflows(
        """
        workflows:
          - name: greet
            provider: hello
            args: [Ada]
        """
    )
    env.commit()

    listed = _dstack(python, env, "workflows")
    assert listed.code == 0, listed
    assert listed.out.splitlines()[1].split() == [
        "greet",
        "hello",
        "dstack-provider-hello",
        "0.1.0",
    ]

    helped = _dstack(python, env, "run", "hello", "--help")
    assert helped.code == 0, helped
    assert "Usage: dstack run hello [OPTIONS] [NAME]..." in helped.out
    assert "Say hello to NAME" in helped.out

    planned = _dstack(python, env, "plan", "--json", "hello", "--gpu", "1", "Grace")
    assert planned.code == 0, planned
    [job] = json.loads(planned.out)["jobs"]
    assert job["spec"]["provider"] == "hello"
    assert job["spec"]["commands"] == ["echo 'Hello, Grace!'"]
    assert job["spec"]["resources"]["gpu"]["count"] == 1

    ran = _dstack(python, env, "run", "greet", "Alan")
    assert ran.code == 0, ran
    assert "Hello, Ada and Alan!" in ran.out

    # Not installed in the test's own Python: there, `hello` is no provider.
    unknown = env.dstack("plan", "hello")
    assert unknown.code == 1
    assert "no workflow 'hello': it is neither a workflow" in unknown.err


def test_a_broken_provider_package_is_one_clear_line(process_env: Env, tmp_path: Path) -> None:
    env = process_env
    project = tmp_path / "dstack-provider-broken"
    shutil.copytree(EXAMPLE, project)
    pyproject = project / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text()
        .replace("dstack-provider-hello", "dstack-provider-broken")
        .replace('hello = "dstack_provider_hello', 'broken = "dstack_provider_broken')
        .replace(
            'py-modules = ["dstack_provider_hello"]', 'py-modules = ["dstack_provider_broken"]'
        )
    )
    (project / "dstack_provider_hello.py").unlink()
    (project / "dstack_provider_broken.py").write_text(
        "raise ImportError('no module named torch')\n"
    )
    python = _venv(tmp_path / "venv")
    install(python, project)
    env.workflows("workflows:\n  - name: w\n    provider: broken\n")
    env.commit()

    for args in (("run", "w"), ("plan", "broken"), ("run", "broken", "--help")):
        result = _dstack(python, env, *args)
        assert result.code == 1, result
        assert result.err.splitlines() == [
            "Error: provider 'broken' of package dstack-provider-broken 0.1.0 failed to load"
            " (dstack_provider_broken:HelloProvider): ImportError: no module named torch",
            "Hint: fix the package, or uninstall it: pip uninstall dstack-provider-broken",
        ], result
    listed = _dstack(python, env, "workflows")  # lists where it comes from, imports nothing
    assert listed.code == 0, listed
    assert "dstack-provider-broken" in listed.out
