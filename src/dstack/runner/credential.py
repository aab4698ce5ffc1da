"""The runner's own credential on disk: `<work_dir>/credential.json`, mode 0600.

Registration with the registration token returns the runner's own token, shown once; the
runner keeps it here, with the server's URL and its runner id, so that after a restart it
registers as the same runner. Nobody but the runner's user may read the file, at any moment:
it is created 0600 under a temporary name and renamed into place.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from pydantic import BaseModel, ValidationError

log = logging.getLogger(__name__)

CREDENTIAL_FILE = "credential.json"


class StoredCredential(BaseModel):
    server_url: str
    runner_id: str
    runner_token: str


def same_server(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def load_credential(path: Path, server_url: str) -> StoredCredential | None:
    """The credential stored at `path` for `server_url`; None when there is none, it is of
    another server, or it cannot be read (the runner then registers anew)."""
    try:
        stored = StoredCredential.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValidationError) as exc:
        log.warning("ignoring the runner credential in %s: %s", path, exc)
        return None
    return stored if same_server(stored.server_url, server_url) else None


def save_credential(path: Path, credential: StoredCredential) -> None:
    """Write `credential` to `path` (replacing it), readable by this user only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            os.fchmod(file.fileno(), 0o600)  # whatever the umask
            file.write(credential.model_dump_json().encode())
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise


def rebind_credential(path: Path, server_url: str) -> None:
    """Name `server_url` in the credential at `path`, whatever server URL it names now.

    Only for a work dir that belongs to one server whose URL changes: the local server listens
    on a new port at each start, and its runner's work dir lies in that server's home.
    """
    try:
        stored = StoredCredential.model_validate_json(path.read_bytes())
    except (OSError, ValidationError):
        return
    if not same_server(stored.server_url, server_url):
        save_credential(path, stored.model_copy(update={"server_url": server_url}))
