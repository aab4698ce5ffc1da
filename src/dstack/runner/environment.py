"""The environment variables and host ports every job gets, whatever the executor; and how
`${{ secrets.NAME }}` in a job's spec reaches it without the value entering the spec.

A job never inherits the runner's environment (which holds the runner's token, its
configuration, its virtualenv): it gets its own variables (`job_env`) and, for a process job,
the few host variables of `HOST_VARIABLES` (`host_env`).
"""

from __future__ import annotations

import os
import re
import socket
import sys
from collections.abc import Mapping

from dstack.models.job import JobSpec
from dstack.models.protocol import JobAssignment, NodeInfo
from dstack.runner.errors import JobStartError

# `${{ secrets.NAME }}`, as the configuration layer leaves it in commands and env values.
SECRET_REFERENCE = re.compile(r"\$\{\{\s*secrets\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


HOST_VARIABLES = frozenset(
    {
        "PATH",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TERM",
        "TMPDIR",
        "USER",
        "LOGNAME",
        "LD_LIBRARY_PATH",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        *(
            name
            for proxy in ("http", "https", "no", "all")
            for name in (f"{proxy}_proxy", f"{proxy.upper()}_PROXY")
        ),
    }
)
"""What a process job takes from the runner's environment (plus every `LC_*`): how the
machine is set up (locale, time zone, proxies, libraries), never how the runner is."""

SYSTEM_BIN_DIRS = frozenset(
    {"/bin", "/sbin", "/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin"}
)


def host_env(
    environ: Mapping[str, str], *, drop_dirs: frozenset[str] | None = None
) -> dict[str, str]:
    """The variables of `environ` a process job may see: `HOST_VARIABLES` and `LC_*`.

    PATH loses the folders of `drop_dirs` (default: `runner_bin_dirs()`), so that `pip` or
    `python3.11` of the runner's own Python are not what a job finds.
    """
    env = {k: v for k, v in environ.items() if k in HOST_VARIABLES or k.startswith("LC_")}
    drop = runner_bin_dirs() if drop_dirs is None else drop_dirs
    path = env.get("PATH", os.defpath).split(os.pathsep)
    env["PATH"] = os.pathsep.join(p for p in path if p and os.path.normpath(p) not in drop)
    return env


def runner_bin_dirs() -> frozenset[str]:
    """The `bin` folders of the Python the runner runs on (its virtualenv's, its
    interpreter's), except the system's own folders, which hold everything else too."""
    dirs = {os.path.dirname(sys.executable), os.path.join(sys.prefix, "bin")}
    return frozenset(os.path.normpath(d) for d in dirs) - SYSTEM_BIN_DIRS


def allocate_ports(spec: JobSpec) -> list[int]:
    """One host port per `spec.ports` entry: the fixed one, or a free one picked now."""
    return [port.port if port.port is not None else free_port() for port in spec.ports]


def free_port() -> int:
    """A TCP port nobody listens on at this moment (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def job_env(assignment: JobAssignment, host_ports: list[int]) -> dict[str, str]:
    """spec.env plus the run's identity, ports, secrets and unbuffered Python output.

    Every secret is exported under its name; `${{ secrets.NAME }}` inside an env value is
    replaced by the value (an unknown name raises `JobStartError`). Secrets come last so a
    job cannot shadow them by accident; GPU selection is the executor's business
    (CUDA_VISIBLE_DEVICES for processes, device requests for Docker).
    """
    secrets = assignment.secrets
    env = {key: _fill(value, secrets) for key, value in assignment.spec.env.items()}
    env.update(
        {
            "DSTACK_RUN_NAME": assignment.run_name,
            "DSTACK_JOB_ID": assignment.job_id,
            "RUN_NAME": assignment.run_name,
            "JOB_ID": assignment.job_id,
            "PYTHONUNBUFFERED": "1",
        }
    )
    for index, port in enumerate(host_ports):
        env[f"PORT_{index}"] = str(port)
        env[f"JOB_PORT_{index}"] = str(port)
    env.update(node_env(assignment))
    env.update(secrets)
    return env


def node_env(assignment: JobAssignment) -> dict[str, str]:
    """The job's place in its (multi-node) run: `DSTACK_NODE_RANK`, `DSTACK_NODES_NUM`,
    `DSTACK_MASTER_NODE_IP`, `DSTACK_MASTER_JOB_ID`, and torch's `MASTER_ADDR`,
    `MASTER_PORT`, `NODE_RANK`, `WORLD_SIZE` (nodes x GPUs per node, at least nodes). A
    one-node job gets them too (rank 0 of 1, master on 127.0.0.1), so scripts need no case
    for it."""
    node = assignment.node or NodeInfo(master_job_id=assignment.job_id)
    gpus = max(1, assignment.spec.resources.gpu_count)
    return {
        "DSTACK_NODE_RANK": str(node.rank),
        "DSTACK_NODES_NUM": str(node.nodes),
        "DSTACK_MASTER_NODE_IP": node.master_address,
        "DSTACK_MASTER_JOB_ID": node.master_job_id,
        "MASTER_ADDR": node.master_address,
        "MASTER_PORT": str(node.master_port),
        "NODE_RANK": str(node.rank),
        "WORLD_SIZE": str(node.nodes * gpus),
    }


def with_secret_references(spec: JobSpec, secrets: dict[str, str]) -> JobSpec:
    """The spec to execute: `${{ secrets.NAME }}` in its commands becomes `${NAME}`, which
    the shell expands from the environment (`job_env` exports every secret), so the value
    never appears in the script, a container's command or a process listing.

    Raises `JobStartError` naming a secret the server did not send (it does not exist).
    """
    commands = [_reference(command, secrets) for command in spec.commands]
    if commands == spec.commands:
        return spec
    return spec.model_copy(update={"commands": commands})


def _reference(text: str, secrets: dict[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        return "${" + _known(match.group(1), secrets) + "}"

    return SECRET_REFERENCE.sub(replace, text)


def _fill(text: str, secrets: dict[str, str]) -> str:
    return SECRET_REFERENCE.sub(lambda m: secrets[_known(m.group(1), secrets)], text)


def _known(name: str, secrets: dict[str, str]) -> str:
    if name not in secrets:
        raise JobStartError(
            f"the job refers to secret '{name}', which the server does not have",
            hint=f"add it: dstack secrets add {name}",
        )
    return name
