"""A throwaway OpenSSH server for tests: `sshd` from the Debian package `openssh-server`.

Each instance has its own host key, config, authorized keys and pid file in a temp dir,
listens on a free loopback port, runs in the foreground (`-D -e`, its log in a file), and
lets in only the user running the tests, with a key `authorize()` was given. Git serves
repositories over it the way hosting sites do: `git-upload-pack` run through the login shell.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.infra.postgres import free_port

SSHD = "/usr/sbin/sshd"
PRIVSEP_DIR = Path("/run/sshd")
"""Debian's sshd refuses to start as root without it (its service unit creates it)."""


class SshdUnavailable(Exception):
    """No `sshd` binary, or it would not start."""


def make_key(path: Path, comment: str = "dstack-test") -> tuple[str, str]:
    """A new passphrase-less ed25519 key at `path` (and `path.pub`): (private, public) text."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path.read_text(), path.with_name(path.name + ".pub").read_text()


class Sshd:
    """`start()`; `authorize(public_key)`; clone `url(path)`; `stop()` (also removes its dir)."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="dstack-sshd-"))
        self.port = free_port()
        self.user = getpass.getuser()
        self.host_key = self.base / "host_key"
        self.authorized_keys = self.base / "authorized_keys"
        self.config = self.base / "sshd_config"
        self.log = self.base / "sshd.log"
        self._process: subprocess.Popen[bytes] | None = None

    def url(self, path: Path) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}{path}"

    def host_public_key(self) -> str:
        """`TYPE BASE64` of the host key, as a known_hosts line carries it."""
        kind, blob, *_ = (self.base / "host_key.pub").read_text().split()
        return f"{kind} {blob}"

    def authorize(self, public_key: str) -> None:
        with self.authorized_keys.open("a") as file:
            file.write(public_key.strip() + "\n")

    def start(self, timeout: float = 15.0) -> None:
        if not os.path.exists(SSHD):
            raise SshdUnavailable(f"no {SSHD} (apt install openssh-server)")
        if os.getuid() == 0 and not PRIVSEP_DIR.is_dir():
            PRIVSEP_DIR.mkdir(mode=0o755)
        try:
            make_key(self.host_key, "host")
        except (OSError, subprocess.CalledProcessError) as exc:
            raise SshdUnavailable(f"ssh-keygen failed: {exc}") from exc
        self.authorized_keys.touch()
        self.config.write_text(self._config_text())
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait_until_listening(timeout)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)
        shutil.rmtree(self.base, ignore_errors=True)

    def accepted(self) -> int:
        """How many logins it let in so far."""
        return self.log.read_text(errors="replace").count("Accepted publickey for")

    def offered(self) -> int:
        """How many times a client offered it an authorized key (logged before the login)."""
        return self.log.read_text(errors="replace").count("Accepted key ")

    def _config_text(self) -> str:
        return "\n".join(
            [
                "ListenAddress 127.0.0.1",
                f"Port {self.port}",
                f"HostKey {self.host_key}",
                f"PidFile {self.base / 'sshd.pid'}",
                f"AuthorizedKeysFile {self.authorized_keys}",
                f"AllowUsers {self.user}",
                "PermitRootLogin prohibit-password",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "StrictModes no",
                "UsePAM no",
                "PrintMotd no",
                "LogLevel VERBOSE",
                "",
            ]
        )

    def _wait_until_listening(self, timeout: float) -> None:
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                tail = self.log.read_text(errors="replace").strip().splitlines()[-5:]
                self.stop()
                raise SshdUnavailable(f"sshd exited: {' | '.join(tail)}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1),
            ):
                return
            if time.monotonic() > deadline:
                self.stop()
                raise SshdUnavailable(f"sshd did not listen on port {self.port}")
            time.sleep(0.05)


@contextlib.contextmanager
def running_sshd() -> Iterator[Sshd]:
    """A started `Sshd`, stopped on leaving; raises `SshdUnavailable` when it cannot start."""
    server = Sshd()
    try:
        server.start()
        yield server
    finally:
        server.stop()
