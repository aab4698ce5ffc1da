"""The environment variables and host ports every job gets, whatever the executor."""

from __future__ import annotations

import socket

from dstack.models.job import JobSpec
from dstack.models.protocol import JobAssignment


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

    Secrets come last so a job cannot shadow them by accident; GPU selection is the
    executor's business (CUDA_VISIBLE_DEVICES for processes, device requests for Docker).
    """
    env = dict(assignment.spec.env)
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
    env.update(assignment.secrets)
    return env
