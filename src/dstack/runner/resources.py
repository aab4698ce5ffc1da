"""What this machine has: CPUs, memory, free disk of the work dir, and NVIDIA GPUs."""

from __future__ import annotations

import errno
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil

from dstack.models.resources import GpuInfo, HostResources

NVIDIA_SMI_QUERY = [
    "--query-gpu=index,name,memory.total",
    "--format=csv,noheader,nounits",
]


NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
FULL_BELOW = 1 << 20
"""A filesystem with less free than this (bytes) is full: no job's file fits any more."""


def detect_resources(
    work_dir: Path, *, path: str | None = None, min_free_disk_mib: int = 0
) -> HostResources:
    """Measure this host. `path` is the PATH searched for `nvidia-smi` (None: the process's).
    `min_free_disk_mib`: below that much free disk at `work_dir` the runner takes no job."""
    return HostResources(
        cpus=psutil.cpu_count() or 1,
        memory_mib=psutil.virtual_memory().total // 2**20,
        disk_mib=free_disk_mib(work_dir),
        gpus=detect_gpus(path=path),
        min_free_disk_mib=min_free_disk_mib,
    )


@dataclass(frozen=True)
class DiskSpace:
    """The free and total space of the filesystem holding `path`, in bytes."""

    path: Path
    free: int
    total: int

    @property
    def full(self) -> bool:
        return self.free < FULL_BELOW

    def describe(self) -> str:
        """`0 bytes free of 8.0 MiB`."""
        return f"{format_bytes(self.free)} free of {format_bytes(self.total)}"


def disk_space(path: Path) -> DiskSpace:
    """The space where `path` is (or would be); never raises (an unreadable disk: 0 of 0)."""
    where = _existing_parent(path)
    try:
        usage = shutil.disk_usage(where)
    except OSError:
        return DiskSpace(where, 0, 0)
    return DiskSpace(where, usage.free, usage.total)


def free_disk_mib(path: Path) -> int:
    return disk_space(path).free // 2**20


def is_no_space(exc: BaseException) -> bool:
    """Whether `exc`, or an error it was raised from, says a disk (or quota) is full."""
    seen: BaseException | None = exc
    for _ in range(8):  # causes chain a few deep at most; a cycle must not hang us
        if seen is None:
            return False
        if isinstance(seen, OSError) and seen.errno in NO_SPACE_ERRNOS:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def format_bytes(count: int) -> str:
    """`dstack.models.sizes.format_bytes`: the one unit system of every dstack output."""
    # sizes: only the runner's low-disk message
    from dstack.models.sizes import format_bytes as formatted

    return formatted(count)


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
