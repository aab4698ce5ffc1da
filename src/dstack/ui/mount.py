"""`install(app)`: the UI's routes on the server app, and its pages' error answers (HTML
with the error's status outside `/api/`; the API's JSON errors stay as they are)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import RedirectResponse, Response

from dstack.errors import DstackError
from dstack.server.errors import ERROR_CODES, Forbidden, Unauthorized
from dstack.ui.auth import SignInNeeded, session_of
from dstack.ui.html import error_page, url
from dstack.ui.routes import api_router, router


def install(app: FastAPI) -> None:
    app.include_router(api_router)
    app.include_router(router)
    app.add_exception_handler(SignInNeeded, _sign_in)  # type: ignore[arg-type]
    for cls in (DstackError, Forbidden, Unauthorized):
        api_handler = app.exception_handlers[cls]
        app.add_exception_handler(cls, _html_outside_api(api_handler))


async def _sign_in(_request: Request, exc: SignInNeeded) -> Response:
    return RedirectResponse(url("/signin", next=exc.path), status_code=303)


def _html_outside_api(api_handler: Any) -> Any:
    async def handler(request: Request, exc: Exception) -> Response:
        path = request.url.path
        if path.startswith("/api/") or path.startswith("/ui/"):
            answer: Response = await api_handler(request, exc)
            return answer
        if isinstance(exc, Unauthorized):
            return RedirectResponse(url("/signin", next=path), status_code=303)
        if isinstance(exc, Forbidden):
            code, message, hint = 403, str(exc), None
        else:
            assert isinstance(exc, DstackError)
            code = next(s for c, _, s in ERROR_CODES if isinstance(exc, c))
            message, hint = exc.message, exc.hint
        page = error_page(code, message, hint, await session_of(request))
        return Response(page, status_code=code, media_type="text/html")

    return handler
