"""How errors leave the server: one handler maps `DstackError` classes to status codes.

Body: ``{"error": {"code": ..., "message": ..., "hint": ...}}``. The client maps `code` back to
the same classes.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from dstack.errors import (
    AuthError,
    ConfigError,
    ConflictError,
    DstackError,
    MissingBlobsError,
    NotFoundError,
    StorageError,
)

logger = logging.getLogger(__name__)


class InvalidRequestError(DstackError):
    """The request is well-formed JSON but asks for something that makes no sense."""


class Unauthorized(Exception):
    """Raised by the auth dependency; answered with a bare 401."""


class Forbidden(Exception):
    """Raised by the auth dependency for a valid token on the wrong kind of endpoint: 403."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# Most specific first: the first matching class wins.
ERROR_CODES: list[tuple[type[DstackError], str, int]] = [
    (AuthError, "unauthorized", 401),
    (MissingBlobsError, "missing_blobs", 404),
    (NotFoundError, "not_found", 404),
    (ConflictError, "conflict", 409),
    (StorageError, "storage", 400),
    (ConfigError, "invalid", 400),
    (InvalidRequestError, "invalid", 400),
    (DstackError, "server_error", 500),
]


def error_body(code: str, message: str, hint: str | None) -> dict[str, dict[str, str | None]]:
    return {"error": {"code": code, "message": message, "hint": hint}}


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(DstackError, _dstack_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(Unauthorized, _unauthorized)
    app.add_exception_handler(Forbidden, _forbidden)  # type: ignore[arg-type]


async def _dstack_error(_request: Request, exc: DstackError) -> JSONResponse:
    code, status = next((c, s) for cls, c, s in ERROR_CODES if isinstance(exc, cls))
    if status >= 500:
        logger.error("request failed: %s", exc, exc_info=exc)
    return JSONResponse(error_body(code, exc.message, exc.hint), status_code=status)


async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(part) for part in first.get("loc", ()))
    message = f"invalid request: {where}: {first.get('msg', 'invalid value')}"
    hint = "the client and server versions may differ; upgrade dstack on both"
    return JSONResponse(error_body("invalid", message, hint), status_code=422)


async def _unauthorized(_request: Request, _exc: Exception) -> Response:
    return Response(status_code=401)


async def _forbidden(_request: Request, exc: Forbidden) -> JSONResponse:
    return JSONResponse(error_body("forbidden", exc.message, None), status_code=403)
