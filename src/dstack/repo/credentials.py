"""Authenticating git to a remote with a token or an SSH key, without leaving the secret around.

A token travels in an ``Authorization`` header set through ``GIT_CONFIG_*`` environment
variables: never in a URL (which git would store in configs and print in errors) and never on
a command line (which other users of the machine see in ``ps``). An SSH key is written to a
file readable by its owner only, in a temporary folder removed afterwards, and handed to ssh
with ``GIT_SSH_COMMAND``.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shlex
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from dstack.models.repo import CredentialKind
from dstack.repo.command import GitCommandError, run_git
from dstack.repo.remote_urls import _SCP_LIKE, sanitize_remote_url

DEFAULT_TOKEN_USER = "x-access-token"
"""User name sent with a token given alone: GitHub wants this one; GitLab, Gitea and
Bitbucket accept any user name with a token. `USER:TOKEN` picks another."""
CHECK_TIMEOUT = 20.0
MASK = "***"
# Phrases of git and ssh that mean "the host did not answer", as opposed to "it refused us".
_UNREACHABLE = (
    "could not resolve host",
    "could not resolve hostname",
    "failed to connect",
    "connection refused",
    "connection timed out",
    "network is unreachable",
    "no route to host",
    "no answer within",
    "operation timed out",
    "name or service not known",
    "temporary failure in name resolution",
)


def token_header(token: str) -> str:
    """The ``Authorization`` header value for ``token`` (or ``USER:TOKEN``): HTTP Basic,
    which every git host accepts for tokens."""
    user, sep, secret = token.partition(":")
    pair = token if sep and user and secret else f"{DEFAULT_TOKEN_USER}:{token}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


def ssh_command(key: Path, known_hosts: Path | None = None) -> str:
    """``GIT_SSH_COMMAND`` that uses only ``key`` and never prompts. A host seen for the first
    time is trusted and remembered (in ``known_hosts`` when given); a changed host key fails."""
    parts = ["ssh", "-i", str(key), "-o", "IdentitiesOnly=yes"]
    parts += ["-o", "StrictHostKeyChecking=accept-new", "-o", "BatchMode=yes"]
    if known_hosts is not None:
        parts += ["-o", f"UserKnownHostsFile={known_hosts}"]
    return shlex.join(parts)


@contextlib.contextmanager
def git_auth(
    kind: CredentialKind, secret: str | None, *, known_hosts: Path | None = None
) -> Iterator[dict[str, str]]:
    """Environment variables for git commands that talk to the remote with these credentials.

    For an SSH key, the key file exists while the context is open and is deleted when it
    closes, whatever happened. Credential helpers of the machine are switched off, so the
    given credentials are the only ones tried.
    """
    config = {"credential.helper": ""}
    env: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        if kind is CredentialKind.TOKEN and secret:
            config["http.extraHeader"] = f"Authorization: {token_header(secret)}"
        elif kind is CredentialKind.SSH_KEY and secret:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dstack-ssh-")))
            env["GIT_SSH_COMMAND"] = ssh_command(_write_key(folder, secret), known_hosts)
        env.update(_config_env(config))
        yield env


def _config_env(config: dict[str, str]) -> dict[str, str]:
    env = {"GIT_CONFIG_COUNT": str(len(config))}
    for index, (key, value) in enumerate(config.items()):
        env[f"GIT_CONFIG_KEY_{index}"] = key
        env[f"GIT_CONFIG_VALUE_{index}"] = value
    return env


def _write_key(folder: Path, key: str) -> Path:
    path = folder / "id"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        # ssh rejects a key file whose last line lacks its newline.
        file.write(key.strip() + "\n")
    return path


def mask(text: str, secret: str | None) -> str:
    """``text`` with the secret (and each line of a multi-line one) replaced by ``***``."""
    if not secret:
        return text
    pieces = {secret, *(line.strip() for line in secret.splitlines())}
    _user, sep, token = secret.partition(":")
    if sep and token:
        pieces.add(token)
    for piece in sorted((p for p in pieces if len(p) >= 4), key=len, reverse=True):
        text = text.replace(piece, MASK)
    return text


def url_for_kind(url: str, kind: CredentialKind) -> str:
    """The URL to clone with credentials of ``kind``: a token needs HTTPS, a key needs SSH.

    ``git@host:o/r.git`` becomes ``https://host/o/r.git`` for a token, and
    ``https://host/o/r.git`` becomes ``git@host:o/r.git`` for a key; other URLs are kept.
    Never returns a secret that ``url`` carried.
    """
    url = sanitize_remote_url(url.strip())
    parts = urlsplit(url)
    if kind is CredentialKind.TOKEN:
        scp = _SCP_LIKE.match(url) if "://" not in url else None
        if scp and not url.startswith("/"):
            return f"https://{scp.group('host')}/{scp.group('path').lstrip('/')}"
        if parts.scheme in ("ssh", "git+ssh", "ssh+git") and parts.hostname:
            return f"https://{parts.hostname}{parts.path}"
    if kind is CredentialKind.SSH_KEY and parts.scheme in ("http", "https") and parts.hostname:
        return f"git@{parts.hostname}:{parts.path.lstrip('/')}"
    return url


@dataclass(frozen=True)
class AccessCheck:
    """What `git ls-remote` said: ``ok``; else whether the host could not be reached at all
    (``unreachable``) or refused us, and git's complaint (secrets masked)."""

    ok: bool
    unreachable: bool = False
    message: str = ""


def check_access(
    url: str, kind: CredentialKind, secret: str | None, *, cwd: Path, timeout: float = CHECK_TIMEOUT
) -> AccessCheck:
    """Try to list the refs of ``url`` with the credentials; never raises for a refusal."""
    try:
        with git_auth(kind, secret) as env:
            run_git(["ls-remote", "-q", url, "HEAD"], cwd=cwd, env=env, timeout=timeout)
    except GitCommandError as exc:
        summary = explain(mask(exc.summary, secret))
        return AccessCheck(False, is_unreachable(summary), summary)
    return AccessCheck(True)


def explain(summary: str) -> str:
    """git's complaint, with what it means when it only says it could not ask for a password
    (prompts are off): the remote refused the credentials, or wanted some."""
    low = summary.lower()
    if "could not read username" in low or "could not read password" in low:
        return f"the remote refused access (wrong or missing token?): {summary}"
    return summary


def is_unreachable(summary: str) -> bool:
    """Whether git's complaint says the host did not answer (rather than refused access)."""
    low = summary.lower()
    return any(phrase in low for phrase in _UNREACHABLE)
