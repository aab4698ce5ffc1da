"""Where the paths a job declares (artifacts, caches, dependency artifacts) live on this host.

A declared path is relative to the job's working directory (`model/`, `./data`), absolute
(`/output`) or under the home directory (`~/.cache/pip`); `dstack.models.paths` says which
spellings are allowed (never `..`). Relative paths are inside the job's code on the host,
whatever the executor. The other two depend on it:

- `docker`: each becomes a folder of the job on the host, `<job dir>/mounts/<n>`, bind-mounted
  at that path in the container (`~` is `/root`). A path inside another one shares its mount.
- `process`: every job gets its own home, `<job dir>/home` (its `HOME`), so `~/...` lands in
  the job's directory. Other absolute paths are refused: a host process has no container to
  map them into, and a path of the host outside the job's directory is not the job's to
  upload or overwrite.

So every declared path is a folder inside the job's directory. The runner checks that again,
on disk, each time it reads or writes one (`check_root`): no name between the job's
directory and the path may be a symbolic link.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from dstack.models.paths import PathError, normalize_declared
from dstack.runner.errors import JobStartError
from dstack.storage.paths import UnsafePathError, real_under, refuse_links

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
        """Where `declared` is on this host, inside the job's directory (as the module says).

        Raises `UnsafePathError` for a path that is not allowed or would leave it.
        """
        host = self._host_path(_normalized(declared))
        if not real_under(os.path.normpath(host), os.path.normpath(self.job_dir)):
            raise UnsafePathError(
                f"artifact path '{declared}' is outside the job's directory",
                hint="check the workflow's working_dir and artifact paths ('..' is refused)",
            )
        return host

    def check_root(self, declared: str) -> Path:
        """`host_path`, after checking on disk that no name on the way from the job's
        directory to it is a symbolic link (`UnsafePathError`)."""
        host = self.host_path(declared)
        refuse_links(
            self.job_dir, Path(os.path.normpath(host)), what=f"artifact path '{declared}':"
        )
        return host

    def _host_path(self, declared: str) -> Path:
        if is_relative(declared):
            return self.working_dir / declared
        if self.home is not None:  # process executor: only the job's own home
            if not declared.startswith("~"):
                raise UnsafePathError(
                    f"artifact path '{declared}' is absolute: a process job has no container "
                    "to map it into",
                    hint="use a path relative to the working directory, or one under ~",
                )
            return self.home / declared[2:]
        container = container_path(declared)
        for host, mounted in sorted(self.mounts.items(), key=lambda m: len(m[1])):
            inside = _relative_to(container, mounted)
            if inside is not None:
                return host / inside if inside else host
        raise KeyError(f"{declared} is not mounted into the job")

    def inside_job_dir(self, declared: str) -> bool:
        """True when the path's files belong to the job alone (so they may be moved away):
        always, for a path `host_path` accepts."""
        try:
            self.host_path(declared)
        except UnsafePathError:
            return False
        return True

    def prepare(self) -> None:
        """Create the home and mount folders (docker would create them owned by root)."""
        for folder in [*self.mounts, *([self.home] if self.home else [])]:
            folder.mkdir(parents=True, exist_ok=True)


def job_paths(
    declared: Iterable[str], *, job_dir: Path, working_dir: Path, executor: str
) -> JobPaths:
    """Resolve every declared path of a job for `executor` (`docker` or anything else).

    Raises `JobStartError` naming the first path that is not allowed (see the module
    docstring), before anything is placed or started.
    """
    declared = list(declared)
    if executor != "docker":
        paths = JobPaths(job_dir=job_dir, working_dir=working_dir, home=job_dir / "home")
    else:
        paths = JobPaths(
            job_dir=job_dir, working_dir=working_dir, mounts=_mounts(declared, job_dir)
        )
    for path in declared:
        try:
            paths.host_path(path)
        except UnsafePathError as exc:
            raise JobStartError(exc.message, exc.hint) from None
    return paths


def _mounts(declared: list[str], job_dir: Path) -> dict[Path, str]:
    mounts: dict[Path, str] = {}
    absolute = {container_path(p) for p in declared if _allowed(p) and not is_relative(p)}
    # Shortest first, so that a path inside an earlier one reuses that mount.
    for container in sorted(absolute, key=len):
        if any(_relative_to(container, mounted) is not None for mounted in mounts.values()):
            continue
        mounts[job_dir / "mounts" / str(len(mounts))] = container
    return mounts


def _allowed(declared: str) -> bool:
    try:
        normalize_declared(declared)
    except PathError:
        return False
    return True


def _normalized(declared: str) -> str:
    try:
        return normalize_declared(declared)
    except PathError as exc:
        raise UnsafePathError(
            str(exc), hint="use a path relative to the working directory, without '..'"
        ) from None


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
