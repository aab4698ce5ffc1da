"""Where the paths a job declares (artifacts, caches, dependency artifacts) live on this host.

A declared path is relative to the job's working directory (`model/`, `./data`), absolute
(`/output`) or under the home directory (`~/.cache/pip`). Relative paths are inside the job's
code on the host, whatever the executor. The other two depend on it:

- `docker`: each becomes a folder of the job on the host, `<job dir>/mounts/<n>`, bind-mounted
  at that path in the container (`~` is `/root`). A path inside another one shares its mount.
- `process`: every job gets its own home, `<job dir>/home` (its `HOME`), so `~/...` lands in
  the job's directory; other absolute paths are used as they are, on the host.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

CONTAINER_HOME = "/root"
"""Home of the job in a container; images with another home user are not looked at."""


def is_relative(declared: str) -> bool:
    """True for paths inside the working directory (not absolute, not under `~`)."""
    return not (declared.startswith("/") or declared == "~" or declared.startswith("~/"))


@dataclass(frozen=True)
class JobPaths:
    """The host location of each declared path of one job, and the mounts that make it so.

    `mounts` maps host folders to container paths (docker only); `home` is the `HOME` of a
    process job (None under docker).
    """

    job_dir: Path
    working_dir: Path
    home: Path | None = None
    mounts: dict[Path, str] = field(default_factory=dict)

    def host_path(self, declared: str) -> Path:
        """Where `declared` is on this host; `~` and absolute paths as the module says."""
        if is_relative(declared):
            return self.working_dir / declared
        if self.home is not None:  # process executor: the job's own home, else the host path
            return self.home / declared[2:] if declared.startswith("~") else Path(declared)
        container = container_path(declared)
        for host, mounted in sorted(self.mounts.items(), key=lambda m: len(m[1])):
            inside = _relative_to(container, mounted)
            if inside is not None:
                return host / inside if inside else host
        raise KeyError(f"{declared} is not mounted into the job")

    def inside_job_dir(self, declared: str) -> bool:
        """True when the path's files belong to the job alone (so they may be moved away)."""
        return self.host_path(declared).resolve().is_relative_to(self.job_dir.resolve())

    def prepare(self) -> None:
        """Create the home and mount folders (docker would create them owned by root)."""
        for folder in [*self.mounts, *([self.home] if self.home else [])]:
            folder.mkdir(parents=True, exist_ok=True)


def job_paths(
    declared: Iterable[str], *, job_dir: Path, working_dir: Path, executor: str
) -> JobPaths:
    """Resolve every declared path of a job for `executor` (`docker` or anything else)."""
    if executor != "docker":
        return JobPaths(job_dir=job_dir, working_dir=working_dir, home=job_dir / "home")
    mounts: dict[Path, str] = {}
    # Shortest first, so that a path inside an earlier one reuses that mount.
    for container in sorted({container_path(p) for p in declared if not is_relative(p)}, key=len):
        if any(_relative_to(container, mounted) is not None for mounted in mounts.values()):
            continue
        mounts[job_dir / "mounts" / str(len(mounts))] = container
    return JobPaths(job_dir=job_dir, working_dir=working_dir, mounts=mounts)


def container_path(declared: str) -> str:
    """`~/x` → `/root/x`; absolute paths normalised."""
    if declared == "~" or declared.startswith("~/"):
        declared = CONTAINER_HOME + declared[1:]
    return posixpath.normpath(declared)


def _relative_to(path: str, folder: str) -> str | None:
    """`path` relative to `folder` ("" when equal), None when it is not inside it."""
    if path == folder:
        return ""
    prefix = folder.rstrip("/") + "/"
    return path[len(prefix) :] if path.startswith(prefix) else None
