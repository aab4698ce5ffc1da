"""How errors leave the server: one handler maps `DstackError` classes to status codes.

Body: ``{"error": {"code": ..., "message": ..., "hint": ...}}``. The client maps `code` back to
the same classes.
"""

from __future__ import annotations

import errno
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from starlette.exceptions import HTTPException

from dstack.errors import (
    AuthError,
    BackendError,
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
    (BackendError, "backend", 502),  # a cloud failed or could not be reached
    (DstackError, "server_error", 500),
]


# Errors from below the services that a request can still cause, answered as what they mean
# for the client rather than as a 500: two requests creating the same id, a value that does
# not fit its column. (Requests are bounded where they enter; these are the net under that.)
FOREIGN_ERRORS: list[tuple[type[Exception], str, int, str, str | None]] = [
    (
        IntegrityError,
        "conflict",
        409,
        "the request conflicts with what the server stores: an id or a name is already taken",
        "choose another name, or check what exists first",
    ),
    (DataError, "invalid", 422, "a value in the request does not fit what the server stores", None),
    (OverflowError, "invalid", 422, "a number in the request is out of range", None),
]
_OUT_OF_RANGE = FOREIGN_ERRORS[-1]
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}


def error_body(code: str, message: str, hint: str | None) -> dict[str, dict[str, str | None]]:
    return {"error": {"code": code, "message": message, "hint": hint}}


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(DstackError, _dstack_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(Unauthorized, _unauthorized)
    app.add_exception_handler(Forbidden, _forbidden)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    for cls in (*(entry[0] for entry in FOREIGN_ERRORS), DBAPIError):
        app.add_exception_handler(cls, _foreign_error)
    app.add_exception_handler(OSError, _os_error)  # type: ignore[arg-type]


def too_large_body(where: str, limit: int) -> dict[str, dict[str, str | None]]:
    """The 413 body: which endpoint, and its limit."""
    return error_body(
        "too_large",
        f"the request body is larger than {_size(limit)}, the limit of {where}",
        'send less at once (docs/api.md, "Limits")',
    )


def _size(count: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if count >= 1 << shift and count % (1 << shift) == 0:
            return f"{count >> shift} {unit}"
    return f"{count} bytes"


async def _dstack_error(request: Request, exc: DstackError) -> JSONResponse:
    if no_space(exc):  # a store's write met a full disk: not the request's fault, nor a bug
        return _disk_full(request, exc)
    code, status = next((c, s) for cls, c, s in ERROR_CODES if isinstance(exc, cls))
    if status >= 500:
        logger.error("request failed: %s", exc, exc_info=exc)
    return JSONResponse(error_body(code, exc.message, exc.hint), status_code=status)


async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(part) for part in first.get("loc", ()))
    reason = first.get("msg", "invalid value")
    if first.get("type") == "value_error":  # our own validators' words, without pydantic's
        reason = str(first.get("ctx", {}).get("error", reason))
    message = f"invalid request: {where}: {reason}"
    hint = None
    if first.get("type") in _SHAPE_ERRORS:  # a field the other side does not know
        hint = "the client and server versions may differ; upgrade dstack on both"
    return JSONResponse(error_body("invalid", message, hint), status_code=422)


_SHAPE_ERRORS = {"missing", "extra_forbidden", "model_attributes_type", "enum", "literal_error"}


async def _http_error(request: Request, exc: HTTPException) -> Response:
    """Starlette's own refusals (no such route, method, a body past its limit) in the API's
    error shape."""
    if exc.status_code == 413:
        limit = request.scope.get("starlette.max_body_size")
        where = f"{request.method} {request.url.path}"
        body = too_large_body(where, limit) if isinstance(limit, int) else None
        if body is not None:
            return JSONResponse(body, status_code=413)
    code = _HTTP_CODES.get(exc.status_code, "http")
    return JSONResponse(
        error_body(code, f"{request.method} {request.url.path}: {exc.detail}", None),
        status_code=exc.status_code,
        headers=exc.headers,
    )


async def _foreign_error(request: Request, exc: Exception) -> JSONResponse:
    if no_space(exc):
        return _disk_full(request, exc)
    entry = next((e for e in FOREIGN_ERRORS if isinstance(exc, e[0])), None)
    if entry is None and _bad_value(exc):
        entry = _OUT_OF_RANGE
    if entry is None:  # the database failed: that is the server's 500
        raise exc
    _, code, status, message, hint = entry
    logger.info("request refused (%s): %s", status, exc)
    return JSONResponse(error_body(code, message, hint), status_code=status)


async def _os_error(request: Request, exc: OSError) -> JSONResponse:
    if not no_space(exc):  # any other failure of the server's disk is its 500
        raise exc
    return _disk_full(request, exc)


def no_space(exc: BaseException) -> bool:
    """Whether `exc`, or an error it came from, is a full disk: ENOSPC/EDQUOT, or SQLite's
    `database or disk is full`."""
    seen: BaseException | None = exc
    for _ in range(8):  # a cause chain is short; a cycle must not hang the handler
        if seen is None:
            return False
        if isinstance(seen, OSError) and seen.errno in _NO_SPACE_ERRNOS:
            return True
        if isinstance(seen, DBAPIError) and _SQLITE_FULL in str(seen.orig):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


_NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_SQLITE_FULL = "database or disk is full"


def _disk_full(request: Request, exc: BaseException) -> JSONResponse:
    """507: the server's disk (its database, blob store or uploads) is full. The request
    changed nothing (its transaction rolled back) and may be sent again once there is room."""
    where = f"{request.method} {request.url.path}"
    logger.error("no space left on the server's disk: %s: %s", where, exc)
    message = f"the dstack server's disk is full: {where} was not saved"
    path = _full_path(exc)
    if path:
        message += f" (no space left for {path})"
    return JSONResponse(
        error_body("disk_full", message, "free space on the server's disk, then try again"),
        status_code=507,
    )


def _full_path(exc: BaseException) -> str | None:
    """The file a full disk refused, when the error names it."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        filename = getattr(seen, "filename", None)
        if isinstance(seen, OSError) and filename:
            return str(filename)
        seen = seen.__cause__ or seen.__context__
    return None


async def _unauthorized(_request: Request, _exc: Exception) -> Response:
    return Response(status_code=401)


async def _forbidden(_request: Request, exc: Forbidden) -> JSONResponse:
    return JSONResponse(error_body("forbidden", exc.message, None), status_code=403)


def _bad_value(exc: BaseException) -> bool:
    """A database driver refusing a value before sending it (asyncpg: an int past int32 is a
    `DataError` that SQLAlchemy passes on as a bare `DBAPIError`)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OverflowError) or any(
            cls.__name__ == "DataError" for cls in type(seen).__mro__
        ):
            return True
        seen = seen.__cause__
    return False
