"""Who a UI request comes from (its session cookie), and the CSRF rules of state changes.

Pages without a session redirect to the sign-in page; the UI's data endpoints answer 401.
Every state change (POST) must carry the session's CSRF token (a form field `csrf` or the
`X-CSRF-Token` header) and, when the browser says where it comes from, come from this
origin (`Origin`, `Sec-Fetch-Site`).
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from fastapi import Request
from starlette.responses import Response

from dstack.server.context import ServerContext
from dstack.server.errors import Forbidden, Unauthorized
from dstack.ui import sessions
from dstack.ui.sessions import UiSession

COOKIE = "dstack_session"
_STATE = "dstack_ui_session"
MAX_FORM_BYTES = 64 << 10


class SignInNeeded(Exception):
    """A page was asked for without a live session: the answer is a redirect to sign in."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


def ctx_of(request: Request) -> ServerContext:
    ctx = request.app.state.ctx
    assert isinstance(ctx, ServerContext)
    return ctx


async def session_of(request: Request) -> UiSession | None:
    if hasattr(request.state, _STATE):
        cached: UiSession | None = getattr(request.state, _STATE)
        return cached
    found = await sessions.lookup(ctx_of(request), request.cookies.get(COOKIE, ""))
    setattr(request.state, _STATE, found)
    return found


async def page_session(request: Request) -> UiSession:
    """Pages: the session, or a redirect to sign in (`SignInNeeded`)."""
    found = await session_of(request)
    if found is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInNeeded(target)
    return found


async def data_session(request: Request) -> UiSession:
    """The UI's data endpoints (JSON, streams, downloads): the session, or 401."""
    found = await session_of(request)
    if found is None:
        raise Unauthorized()
    return found


def check_origin(request: Request) -> None:
    """Refuse a state change a browser says comes from another site."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise Forbidden("cross-site request refused")
    origin = request.headers.get("origin")
    if origin is not None:
        host = request.headers.get("host", "")
        if origin == "null" or urlsplit(origin).netloc != host:
            raise Forbidden("cross-origin request refused")


async def read_form(request: Request) -> dict[str, str]:
    """A urlencoded form body (bounded), one value per field."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise Forbidden("form too large")
    parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {key: values[0] for key, values in parsed.items()}


async def read_form_lists(request: Request) -> dict[str, list[str]]:
    """The form as `read_form` bounds it, every value of each field (checkboxes)."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise Forbidden("form too large")
    return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)


async def changing(request: Request) -> tuple[UiSession, dict[str, str]]:
    """A state change from a page: the session (or 401), same origin, CSRF token matches.
    Returns the session and the form."""
    check_origin(request)
    ui = await data_session(request)
    form = await read_form(request)
    given = request.headers.get("x-csrf-token") or form.get("csrf")
    if not sessions.csrf_matches(ui.csrf, given):
        raise Forbidden("missing or wrong CSRF token; reload the page")
    return ui, form


def set_cookie(response: Response, request: Request, session_id: str) -> None:
    secure = request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"
    response.set_cookie(
        COOKIE,
        session_id,
        max_age=int(sessions.SESSION_TTL.total_seconds()),
        httponly=True,
        samesite="lax",
        secure=secure,
        path="/",
    )
