"""Spot interruptions: a watcher of the instance metadata service for the notice a cloud
posts shortly before it reclaims a spot instance (EC2: about two minutes).

The runner starts one when it has a metadata URL (`dstack-runner start --metadata-url`, set
by the user data of cloud runners; off for self-hosted runners). It polls every `interval`
seconds; the first notice is handed to `on_notice` once, and the watch ends. A service that
does not answer, or answers nonsense, is logged once and polled again: a runner never stops
because its metadata service is away.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

from dstack.errors import DstackError
from dstack.models.runner import SpotNotice

log = logging.getLogger(__name__)


class MetadataSource(Protocol):
    def spot_notice(self) -> SpotNotice | None:
        """The pending notice, None when there is none; `DstackError` when unreadable."""


class InterruptionWatcher:
    """Polls `source` on a daemon thread until a notice came or `stop()` (or `shutdown`)."""

    def __init__(
        self,
        source: MetadataSource,
        on_notice: Callable[[SpotNotice], None],
        *,
        interval: float = 5.0,
        shutdown: threading.Event | None = None,
    ) -> None:
        self._source = source
        self._on_notice = on_notice
        self._interval = interval
        self._stopped = shutdown or threading.Event()
        self._failing = False
        self.notice: SpotNotice | None = None
        self._thread = threading.Thread(target=self._loop, name="interruption", daemon=True)

    def start(self) -> InterruptionWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def poll(self) -> SpotNotice | None:
        """One look at the service: the notice, or None (none, or the service unreadable)."""
        try:
            notice = self._source.spot_notice()
        except DstackError as exc:
            if not self._failing:  # once per outage, not every few seconds
                log.warning("cannot read the instance metadata service: %s", exc.message)
            self._failing = True
            return None
        if self._failing:
            log.info("the instance metadata service answers again")
            self._failing = False
        return notice

    def _loop(self) -> None:
        while not self._stopped.is_set():
            notice = self.poll()
            if notice is not None:
                self.notice = notice
                log.warning("%s; saving the jobs' artifacts and logs", notice.describe())
                self._on_notice(notice)
                return
            self._stopped.wait(self._interval)
