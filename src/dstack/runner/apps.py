"""Readiness of a job's web apps: probe each app's host port until it answers.

The probe runs on its own thread beside the job: it never delays the job, stops when the job
ends, and a job whose app never answers simply keeps running (the user sees "waiting for ...").
"""

from __future__ import annotations

import http.client
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from dstack.models.job import JobSpec
from dstack.providers.app import served_apps

log = logging.getLogger(__name__)

PROBE_HOST = "127.0.0.1"


@dataclass(frozen=True)
class ProbeTarget:
    """One app to probe: its name, the host port it is published on, the path to GET."""

    name: str
    port: int
    url_path: str = "/"


def probe_targets(spec: JobSpec, host_ports: list[int]) -> list[ProbeTarget]:
    """The apps of `spec` (and its ports no app uses) on their host ports."""
    return [
        ProbeTarget(name=app.name, port=host_ports[app.port_index], url_path=app.url_path)
        for app in served_apps(spec)
        if app.port_index < len(host_ports)
    ]


def answers(target: ProbeTarget, timeout: float = 2.0) -> bool:
    """True when an HTTP server accepts a connection on 127.0.0.1 and answers a GET of the
    app's path, whatever the status (a login redirect or a 403 means the app is up): a port
    that only accepts connections (Docker's proxy does while the app starts) is not ready.
    Never raises."""
    conn = http.client.HTTPConnection(PROBE_HOST, target.port, timeout=timeout)
    try:
        conn.request("GET", target.url_path or "/")
        conn.getresponse().close()
        return True
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


class AppProbe:
    """Probes `targets` until all answered, then calls `on_ready` once (on the probe's thread).

    `interval` is the first pause between rounds; it doubles up to `max_interval`, so an app
    that takes minutes to install costs few connections. `stop()` may be called from any
    thread, any number of times; it returns at once and `on_ready` is not called after it.
    `check` tells whether one target answers (injected by tests).
    """

    def __init__(
        self,
        targets: list[ProbeTarget],
        on_ready: Callable[[], None],
        *,
        interval: float = 0.25,
        max_interval: float = 2.0,
        check: Callable[[ProbeTarget], bool] = answers,
    ) -> None:
        self.targets = list(targets)
        self._on_ready = on_ready
        self._interval = interval
        self._max_interval = max_interval
        self._check = check
        self._stopped = threading.Event()
        self.ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="app-probe", daemon=True)

    def start(self) -> AppProbe:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        waiting = list(self.targets)
        pause = self._interval
        while waiting and not self._stopped.is_set():
            waiting = [target for target in waiting if not self._check(target)]
            if waiting and self._stopped.wait(pause):
                return
            pause = min(pause * 2, self._max_interval)
        if self._stopped.is_set():
            return
        self.ready.set()
        try:
            self._on_ready()
        except Exception:  # reporting is best effort: the job goes on either way
            log.exception("reporting the apps as ready failed")
