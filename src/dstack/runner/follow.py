"""A local runner outlives its server: it follows the server's URL and leaves when orphaned.

The local server (`dstack.server.local`) may crash or restart, and it binds a new port each
time. Its runner keeps running its jobs meanwhile: their logs wait in the spool, their
reports are retried. `ServerFollower` reads the server's `server.json` and points the runner's
client at the URL it names: every second from the moment a request gets no answer
(`notice`, the client's `Transport.on_no_answer`) until the server answers again, and not
at all while it answers (an idle runner's claim long-poll is always open, so a server that
goes away is noticed at once). The runner exits only when it has been idle (no job running
nor being recovered) while the server stayed unreachable for `orphan_exit_after` seconds
(a server stopped for good).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from dstack.runner.settings import RunnerSettings

log = logging.getLogger(__name__)


class Followed(Protocol):
    """What the follower needs of a `Runner`."""

    settings: RunnerSettings

    def is_idle(self) -> bool: ...

    def last_contact(self) -> float: ...

    def shutdown(self) -> None: ...


class ServerFollower:
    """Runs on a daemon thread until `stop` (see the module's docstring). `rebase` points
    the runner's client at a new URL; `clock` is monotonic seconds."""

    def __init__(
        self,
        runner: Followed,
        server_file: Path,
        *,
        rebase: Callable[[str], None],
        orphan_exit_after: float,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._runner = runner
        self._server_file = server_file
        self._rebase = rebase
        self._orphan_exit_after = orphan_exit_after
        self._interval = interval
        self._clock = clock
        self._stopped = threading.Event()
        self._trouble = threading.Event()
        self._trouble_at = clock()  # until the first contact, the server is looked for
        self._seen: tuple[int, int, int] | None = None  # the file's identity when last read
        self.url: str | None = None

    def start(self) -> ServerFollower:
        threading.Thread(target=self._loop, name="server-follower", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._trouble.set()

    def notice(self) -> None:
        """A request got no answer: look for the server every second until it answers."""
        self._trouble_at = self._clock()
        self._trouble.set()

    def in_contact(self) -> bool:
        """Whether the server answered since the last request that got no answer."""
        return self._runner.last_contact() > self._trouble_at

    def check(self) -> None:
        """One round: follow a new URL; leave when idle and orphaned. The file is read only
        when it changed (a `stat` a second while the server does not answer)."""
        url = self._changed_url()
        if url is not None and url != self.url:
            if self.url is not None:
                log.info("the local server moved to %s; following it", url)
            self.url = url
            self._rebase(url)
            self._update_settings(url)
        silent = self._clock() - self._runner.last_contact()
        if silent > self._orphan_exit_after and self._runner.is_idle():
            log.warning("the local server has been gone for %.0fs and no job runs: exiting", silent)
            self._runner.shutdown()
            self._stopped.set()

    def _changed_url(self) -> str | None:
        try:
            info = self._server_file.stat()
            seen = (info.st_ino, info.st_mtime_ns, info.st_size)
        except OSError:
            seen = None
        if seen is not None and seen == self._seen:
            return self.url
        self._seen = seen
        return read_server_url(self._server_file)

    def _update_settings(self, url: str) -> None:
        """So that the runner's credential is looked up (and stored) for the new URL."""
        self._runner.settings = dataclasses.replace(self._runner.settings, server_url=url)

    def _loop(self) -> None:
        while not self._stopped.is_set():
            if self.in_contact():
                self._trouble.wait()  # until a request gets no answer (or `stop`)
                self._trouble.clear()
            elif self._stopped.wait(self._interval):
                return
            try:
                self.check()
            except Exception:  # the follower must not die of a bad file
                log.exception("following the local server failed")


def read_server_url(server_file: Path) -> str | None:
    """The `url` of a local server's `server.json`, or None when missing or unreadable."""
    try:
        url = json.loads(server_file.read_text()).get("url")
    except (OSError, ValueError, AttributeError):
        return None
    return url if isinstance(url, str) and url.startswith("http") else None
