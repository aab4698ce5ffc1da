"""Remote URLs: a credential-free form to record, and a stable repository id.

``git@github.com:o/r.git``, ``ssh://git@github.com/o/r``, ``https://github.com/o/r`` and
``https://user:token@github.com/o/r.git/`` all name one repository, so they share one id
(``github.com/o/r``): runs of the same code group together whichever way it was cloned.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

# `user@host:path` (scp-like syntax); a drive letter or a path with a slash before the colon
# is a local path, as git itself decides.
_SCP_LIKE = re.compile(r"^(?:(?P<user>[^@/]+)@)?(?P<host>[^:/]+):(?P<path>(?!//).*)$")
_URL_SCHEMES = ("ssh", "git", "http", "https", "git+ssh", "ssh+git", "ftp", "ftps")


def sanitize_remote_url(url: str) -> str:
    """``url`` without a password or token, fit to be stored in a run and shown to people."""
    parts = urlsplit(url)
    if parts.scheme in _URL_SCHEMES and parts.password is not None:
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        if parts.scheme in ("ssh", "git+ssh", "ssh+git") and parts.username:
            netloc = f"{parts.username}@{netloc}"
        return urlunsplit(parts._replace(netloc=netloc))
    if parts.scheme in ("http", "https") and parts.username:
        # A bare user name in an https URL is almost always a token.
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def normalize_remote_url(url: str) -> str | None:
    """``host/path`` for a network remote (lower-case host, no user, port or ``.git``).

    Returns None for a remote that is a local path or ``file://`` URL: such a remote has no
    name that means the same on another machine.
    """
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme in _URL_SCHEMES and parts.hostname:
        return _join(parts.hostname, parts.path)
    if "://" not in url:
        scp = _SCP_LIKE.match(url)
        if scp and not _looks_local(url):
            return _join(scp.group("host"), scp.group("path"))
    return None


def local_path_of_remote(url: str, root: Path) -> Path | None:
    """The folder a local remote (path or ``file://`` URL) points at, resolved from ``root``."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        return Path(parts.path).resolve()
    if normalize_remote_url(url) is None and "://" not in url:
        return (root / url).resolve()
    return None


def repo_id_for(root: Path, remote_url: str | None) -> str:
    """The stable id of a repository: its normalized remote, else ``local:`` + a path hash.

    A repository whose ``origin`` is a local folder is identified by that folder, so every
    clone of it shares one id; one without ``origin`` by its own absolute path.
    """
    if remote_url:
        normalized = normalize_remote_url(remote_url)
        if normalized:
            return normalized
        local = local_path_of_remote(remote_url, root)
        if local is not None:
            return "local:" + _path_hash(local)
    return "local:" + _path_hash(root.resolve())


def _join(host: str, path: str) -> str:
    path = path.strip("/")
    path = path.removesuffix(".git").rstrip("/")
    return f"{host.lower()}/{path}" if path else host.lower()


def _looks_local(url: str) -> bool:
    before_colon = url.split(":", 1)[0]
    return "/" in before_colon or (len(before_colon) == 1 and before_colon.isalpha())


def _path_hash(path: Path) -> str:
    return hashlib.sha256(str(path).encode("utf-8", "surrogateescape")).hexdigest()[:16]
