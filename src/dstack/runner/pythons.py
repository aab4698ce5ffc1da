"""The Python a process job runs: a virtualenv of its own, never the runner's environment.

Every process job gets `<job dir>/venv`, made from a host interpreter (`python3` on the job's
PATH, or `pythonX.Y` for `python: X.Y`) with the interpreter's own packages visible
(`include-system-site-packages`): what the machine has installed (torch, jupyter, ...) is
importable as before, while `pip install` in the job writes into the job's venv, so it can
change neither dstack's installation nor the next job's Python. The venv is written directly
(a `pyvenv.cfg`, links to the interpreter, an empty `site-packages`, `pip` scripts): a few
file operations per job, where `python -m venv` costs a Python start, and with pip seconds.
A workflow with `requirements` gets a venv of only what it installs (as `python -m venv`
makes it, with pip: seconds), and so does one whose interpreter has no pip.
Interpreters are probed once per runner, as the user jobs run as.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dstack.runner.jobuser import JobUser

_PROBE = (
    "import importlib.util as u, json, sys; print(json.dumps({'base': getattr(sys, "
    "'_base_executable', '') or sys.executable, 'version': list(sys.version_info[:3]), "
    "'pip': u.find_spec('pip') is not None, 'venv': sys.prefix != sys.base_prefix}))"
)


@dataclass(frozen=True)
class Interpreter:
    """A host Python outside any virtualenv, as the job user sees it."""

    executable: str
    version: tuple[int, int, int]
    has_pip: bool

    @property
    def short_version(self) -> str:
        return f"{self.version[0]}.{self.version[1]}"


class Interpreters:
    """Finds (and remembers) the host interpreter behind a command name on a PATH."""

    def __init__(self, user: JobUser | None = None) -> None:
        self._user = user
        self._known: dict[tuple[str, str], Interpreter | None] = {}
        self._lock = threading.Lock()

    def find(self, command: str, env: Mapping[str, str]) -> Interpreter | None:
        """The interpreter `command` (`python3`, `python3.10`) runs with `env`'s PATH, as the
        job user; None when there is none or it does not start."""
        key = (command, env.get("PATH", ""))
        with self._lock:
            if key not in self._known:
                self._known[key] = self._probe(command, env)
            return self._known[key]

    def _probe(self, command: str, env: Mapping[str, str]) -> Interpreter | None:
        found, in_venv = self._run(command, env)
        if found is not None and in_venv:
            # A virtualenv's python names its base: probe that one, whose packages and pip
            # are what a job's venv gets.
            found, _ = self._run(found.executable, env)
        return found

    def _run(self, command: str, env: Mapping[str, str]) -> tuple[Interpreter | None, bool]:
        user = self._user
        try:
            result = subprocess.run(
                [command, "-I", "-c", _PROBE],
                env=dict(env),
                cwd="/",
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
                user=user.uid if user else None,
                group=user.gid if user else None,
                extra_groups=list(user.groups) if user else None,
            )
            data = json.loads(result.stdout) if result.returncode == 0 else None
        except (OSError, subprocess.SubprocessError, ValueError):
            return None, False
        if not isinstance(data, dict):
            return None, False
        major, minor, micro = (int(part) for part in data["version"])
        found = Interpreter(str(data["base"]), (major, minor, micro), bool(data["pip"]))
        return found, bool(data["venv"])


def write_venv(venv: Path, interpreter: Interpreter) -> Path:
    """A virtualenv of `interpreter` at `venv` (which must not exist), with the
    interpreter's packages visible; returns its `bin`. Its `pip` runs the interpreter's pip,
    which installs into the venv."""
    version = interpreter.short_version
    bin_dir = venv / "bin"
    (venv / "lib" / f"python{version}" / "site-packages").mkdir(parents=True)
    (venv / "lib64").symlink_to("lib")  # where platlibdir is lib64 (Fedora, RHEL)
    bin_dir.mkdir()
    micro = ".".join(str(part) for part in interpreter.version)
    (venv / "pyvenv.cfg").write_text(
        f"home = {os.path.dirname(interpreter.executable)}\n"
        "include-system-site-packages = true\n"
        f"version = {micro}\n"
        f"executable = {interpreter.executable}\n"
    )
    (bin_dir / "python").symlink_to(interpreter.executable)
    for name in ("python3", f"python{version}"):
        (bin_dir / name).symlink_to("python")
    for name in ("pip", "pip3", f"pip{version}"):
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\nexec "{bin_dir / "python"}" -m pip "$@"\n')
        script.chmod(0o755)
    return bin_dir


def run_venv_module(
    venv: Path, interpreter: Interpreter, *, system_site_packages: bool
) -> subprocess.CompletedProcess[bytes]:
    """`python -m venv` (which installs pip into the venv): for a venv of its own packages
    only, or an interpreter without pip. Its output is returned for the job's log."""
    options = ["--system-site-packages"] if system_site_packages else []
    return subprocess.run(
        [interpreter.executable, "-m", "venv", *options, str(venv)],
        capture_output=True,
        timeout=600,
        check=False,
    )
