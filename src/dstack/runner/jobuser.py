"""The unprivileged user a runner started as root runs process jobs as (`--job-user`).

A job running as the runner's own user can read everything the runner can: its credential
file, `/proc/<runner>/environ`, the server's files when they share a machine. A root runner
therefore runs process jobs as a user of their own (default `dstack-job`, created with
`useradd` when missing): the job's folders are handed over to that user before it starts,
and everything else of the runner stays out of its reach (its work dir is 0700).
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from dstack.errors import ConfigError

DEFAULT_JOB_USER = "dstack-job"


@dataclass(frozen=True)
class JobUser:
    """A user jobs run as: the ids `Popen` switches to, and who may reach what."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]

    def can_enter(self, folder: Path) -> bool:
        """Whether this user may look up names in `folder` and every folder above it
        (search permission by the mode bits; ACLs are not looked at)."""
        try:
            return all(self._may_search(os.stat(p)) for p in (folder, *folder.parents))
        except OSError:
            return False

    def _may_search(self, st: os.stat_result) -> bool:
        if st.st_uid == self.uid:
            return bool(st.st_mode & stat.S_IXUSR)
        if st.st_gid == self.gid or st.st_gid in self.groups:
            return bool(st.st_mode & stat.S_IXGRP)
        return bool(st.st_mode & stat.S_IXOTH)


def default_job_user() -> str | None:
    """`dstack-job` for a runner started as root; None (the runner's own user) otherwise."""
    return DEFAULT_JOB_USER if os.geteuid() == 0 else None


def is_own_user(name: str) -> bool:
    """Whether `name` is the user this process runs as."""
    entry = _lookup(name)
    return entry is not None and entry.pw_uid == os.geteuid()


def resolve_job_user(name: str | None, *, create: bool = True) -> JobUser | None:
    """The user named `name`, created when missing (with `create`, as root only).

    None when `name` is None or the runner's own user: jobs then run as the runner does.
    Raises `ConfigError` when a runner that is not root is asked for another user, or when
    the user cannot be created.
    """
    if name is None:
        return None
    entry = _lookup(name)
    if entry is not None and entry.pw_uid == os.geteuid():
        return None
    if os.geteuid() != 0:
        raise ConfigError(
            f"only a runner started as root can run jobs as user '{name}'",
            hint="start the runner as root, or leave out --job-user",
        )
    if entry is None and create:
        entry = _create(name)
    if entry is None:
        raise ConfigError(f"no user '{name}' on this machine", hint=f"create it: useradd {name}")
    groups = tuple(g for g in os.getgrouplist(name, entry.pw_gid) if g != entry.pw_gid)
    return JobUser(name=name, uid=entry.pw_uid, gid=entry.pw_gid, groups=groups)


def hand_over(paths: Iterable[Path], user: JobUser) -> None:
    """Make each tree in `paths` the job user's, before the job starts.

    Folders become 0700 at the top (nobody else on the machine reads a job's files) and every
    entry is `lchown`ed, symbolic links never followed. A file with other hard links keeps its
    owner: it is shared with something of the runner (git objects of a kept checkout), and
    the job may read it but must not be able to change it.
    """
    for top in paths:
        if not top.exists() or top.is_symlink():
            continue
        _own(top, user)
        os.chmod(top, 0o700)
        for folder, dirs, files in os.walk(top):
            for entry in (*dirs, *files):
                _own(Path(folder) / entry, user)


def _own(path: Path, user: JobUser) -> None:
    st = os.lstat(path)
    if st.st_uid == user.uid or (stat.S_ISREG(st.st_mode) and st.st_nlink > 1):
        return
    os.lchown(path, user.uid, user.gid)


def _lookup(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def _create(name: str) -> pwd.struct_passwd:
    """A system user without a home or a login shell (jobs get a home in their folder)."""
    useradd = shutil.which("useradd") or "useradd"
    nologin = shutil.which("nologin") or "/usr/sbin/nologin"
    command = [useradd, "--system", "--user-group", "--no-create-home"]
    command += ["--home-dir", "/nonexistent", "--shell", nologin, name]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        problem = result.stderr.strip() or f"exit code {result.returncode}"
    except OSError as exc:
        problem = str(exc)
    entry = _lookup(name)  # another runner may have created it meanwhile
    if entry is None:
        raise ConfigError(
            f"cannot create the job user '{name}': {problem}",
            hint="create it yourself (useradd --system NAME) or pass --job-user",
        )
    return entry
