"""What every HTTP request passes before its body is read: who sends it (401), and how many
bytes it may send (413).

FastAPI reads and parses a body before it runs an endpoint's dependencies, so the `require_*`
dependencies alone would let anyone make the server read 50 MB of JSON. `RequestGuard` checks
the token on the headers first (the principal is cached on the request, so the dependencies
find it there), then bounds the body with Starlette's own limiter: a `Content-Length` over
the limit is refused unread, a chunked body once its bytes pass it. WebSockets (the tunnels)
check their tokens themselves, before they accept.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from dstack.server.auth import principal_of
from dstack.server.errors import Unauthorized, too_large_body
from dstack.server.settings import ServerSettings

PUBLIC_PATHS = frozenset({"/api/health"})
"""Answered without a token."""
UI_PAGES = frozenset({"/", "/signin", "/signout", "/tags", "/runners", "/secrets", "/users"})
UI_PREFIXES = ("/ui/", "/runs/", "/signin/", "/secrets/")
"""The web UI's paths (`dstack.ui`): its pages and endpoints authenticate by their session
cookie, each route itself (a page without one redirects to sign in, its data is 401), never
by a bearer token; their bodies are bounded here all the same. Every other path (the API,
FastAPI's /docs and /openapi.json, unknown ones) needs a token."""


def is_ui_path(path: str) -> bool:
    return path in UI_PAGES or path.startswith(UI_PREFIXES)


SMALL_BODY_BYTES = 16 << 10
"""Bodies of a few fields (a backend's settings, an offers request)."""

# (method, route, limit): the endpoints whose bodies may be larger (or smaller) than
# `settings.max_body_bytes`. The first match wins; docs/api.md lists the same, under "Limits".
ROUTE_LIMITS: list[tuple[str, str, Callable[[ServerSettings], int | None]]] = [
    ("POST", "/api/jobs/{job_id}/logs", lambda s: s.max_log_batch_bytes),
    ("POST", "/api/jobs/{job_id}/artifacts", lambda s: s.max_manifest_bytes),
    ("POST", "/api/jobs/{job_id}/caches", lambda s: s.max_manifest_bytes),
    ("POST", "/api/runs/upload", lambda s: s.max_manifest_bytes),
    ("POST", "/api/runs/import", lambda s: s.max_manifest_bytes),
    ("POST", "/api/runs", lambda s: s.max_run_bytes),
    ("POST", "/api/runs/plan", lambda s: s.max_run_bytes),
    ("PUT", "/api/blobs/{digest}", lambda s: s.max_blob_bytes),
    ("POST", "/api/backends", lambda s: SMALL_BODY_BYTES),
    ("POST", "/api/offers", lambda s: SMALL_BODY_BYTES),
]


@dataclass(frozen=True)
class BodyLimit:
    method: str
    route: str
    max_bytes: int | None
    pattern: re.Pattern[str]


class BodyLimits:
    """The body limit of each request, from the settings: `ROUTE_LIMITS`, else the default."""

    def __init__(self, settings: ServerSettings) -> None:
        self.default = settings.max_body_bytes
        self.routes = [
            BodyLimit(method, route, limit(settings), compile_path(route)[0])
            for method, route, limit in ROUTE_LIMITS
        ]

    def of(self, method: str, path: str) -> tuple[int | None, str]:
        """(bytes, route): None bytes for an unbounded body."""
        for entry in self.routes:
            if entry.method == method and entry.pattern.match(path):
                return entry.max_bytes, entry.route
        return self.default, path


class RequestGuard:
    """ASGI middleware: authenticate on the headers, then bound the body. Outermost of the
    app's own middleware, so nothing before it reads a byte of the body."""

    def __init__(self, app: ASGIApp, *, settings: ServerSettings) -> None:
        self.app = app
        self.limits = BodyLimits(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        needs_token = path not in PUBLIC_PATHS and not is_ui_path(path)
        if needs_token and not await _authenticated(scope):
            await Response(status_code=401)(scope, receive, send)
            return
        limit, route = self.limits.of(scope["method"], scope["path"])
        if limit is None:
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > limit:  # refused without reading a byte
            await _too_large(scope, limit, route)(scope, receive, send)
            return
        await RequestBodyLimitMiddleware(self.app, max_body_size=limit)(scope, receive, send)


async def _authenticated(scope: Scope) -> bool:
    try:
        await principal_of(Request(scope))
    except Unauthorized:
        return False
    return True


def _content_length(scope: Scope) -> int | None:
    value = Headers(scope=scope).get("content-length")
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


def _too_large(scope: Scope, limit: int, route: str) -> JSONResponse:
    return JSONResponse(too_large_body(f"{scope['method']} {route}", limit), status_code=413)
