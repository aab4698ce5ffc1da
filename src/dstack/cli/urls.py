"""The addresses of a run's apps as the user reaches them, and URLs in logs rewritten to them.

An app prints the address it listens on (`http://0.0.0.0:8501`, `http://<container>:8888/lab`)
which is of no use where the user sits; the attached view shows instead the address the CLI
reaches it at (the host port of a local run, a forward through the server for a remote one).
Only the ports of the job that printed the line are rewritten, and only in the attached view:
the stored log keeps what the app printed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urlencode

from dstack.models.job import AppSpec
from dstack.models.logs import LogEvent

# `http://HOST:PORT` with HOST a name or an IPv4 address; the port is matched exactly.
_URL = re.compile(r"\b(https?)://([A-Za-z0-9][A-Za-z0-9._-]*):(\d{1,5})(?![\d])")


def app_url(address: str, app: AppSpec) -> str:
    """`http://ADDRESS/PATH?QUERY` of `app` reached at `address` (`127.0.0.1:PORT`)."""
    path = app.url_path if app.url_path.startswith("/") else "/" + app.url_path
    query = f"?{urlencode(app.url_query)}" if app.url_query else ""
    return f"http://{address}{path}{query}"


def rewrite_urls(text: str, addresses: Mapping[int, str]) -> str:
    """`text` with `http://ANY-HOST:P` replaced by `http://ADDRESS` for each port P in
    `addresses` (P → `127.0.0.1:L`); other URLs stay as they are."""
    if not addresses or "://" not in text:
        return text

    def replace(match: re.Match[str]) -> str:
        address = addresses.get(int(match.group(3)))
        return match.group(0) if address is None else f"{match.group(1)}://{address}"

    return _URL.sub(replace, text)


class LogRewriter:
    """Rewrites log events job by job: `ports[job_id]` maps the job's ports to addresses."""

    def __init__(self) -> None:
        self._ports: dict[str, dict[int, str]] = {}

    def set_ports(self, job_id: str, addresses: Mapping[int, str]) -> None:
        self._ports[job_id] = dict(addresses)

    def knows(self, job_id: str) -> bool:
        return job_id in self._ports

    def __call__(self, events: list[LogEvent]) -> list[LogEvent]:
        return [self._rewrite(event) for event in events]

    def _rewrite(self, event: LogEvent) -> LogEvent:
        addresses = self._ports.get(event.job_id)
        if not addresses:
            return event
        data = rewrite_urls(event.data, addresses)
        return event if data == event.data else event.model_copy(update={"data": data})
