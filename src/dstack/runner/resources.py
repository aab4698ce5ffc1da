"""What this machine has: CPUs, memory, free disk of the work dir, and NVIDIA GPUs."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

import psutil

from dstack.models.resources import GpuInfo, HostResources

NVIDIA_SMI_QUERY = [
    "--query-gpu=index,name,memory.total",
    "--format=csv,noheader,nounits",
]


def detect_resources(work_dir: Path, *, path: str | None = None) -> HostResources:
    """Measure this host. `path` is the PATH searched for `nvidia-smi` (None: the process's)."""
    disk_path = _existing_parent(work_dir)
    return HostResources(
        cpus=psutil.cpu_count() or 1,
        memory_mib=psutil.virtual_memory().total // 2**20,
        disk_mib=psutil.disk_usage(str(disk_path)).free // 2**20,
        gpus=detect_gpus(path=path),
    )


def detect_gpus(*, path: str | None = None, timeout: float = 10.0) -> list[GpuInfo]:
    """The GPUs `nvidia-smi` lists; none when it is missing, fails or prints nothing usable."""
    binary = shutil.which("nvidia-smi", path=path)
    if binary is None:
        return []
    try:
        result = subprocess.run(
            [binary, *NVIDIA_SMI_QUERY],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if result.returncode != 0:
        return []
    return parse_nvidia_smi(result.stdout)


def parse_nvidia_smi(output: str) -> list[GpuInfo]:
    """Parse `index, name, memory.total` CSV lines; lines that do not parse are skipped.

    Names may contain commas, so index is the first field and memory the last.
    """
    gpus: list[GpuInfo] = []
    for line in output.splitlines():
        index, _, rest = line.partition(",")
        name, _, memory = rest.rpartition(",")
        if not name.strip():
            continue
        try:
            gpus.append(GpuInfo(index=int(index), name=name.strip(), memory_mib=int(float(memory))))
        except ValueError:
            continue
    return gpus


def gpu_env(gpu_indexes: list[int]) -> Mapping[str, str]:
    """`CUDA_VISIBLE_DEVICES` for a job holding these GPUs (nothing when it holds none)."""
    if not gpu_indexes:
        return {}
    return {"CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in gpu_indexes)}


def _existing_parent(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")
