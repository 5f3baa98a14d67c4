"""One error shape for every bad request ({error, detail, status}) and the web layer's error boundary.

Only two kinds of exception are the client's doing: this layer's own `ApiError` and ferkit's
`FerkitError` children (a bad image, a bad video, ...), which map to 4xx. A full disk is 507, a client
that hung up mid-request is one info line. Anything else is a bug: a 500 that says so, and the server
lives on.
"""

from __future__ import annotations

import errno
import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ferkit.apps.web.schemas import ErrorResponse
from ferkit.errors import (
    FerkitError,
    ImageError,
    ImageTooLargeError,
    MissingExtraError,
    OutputError,
    UsageError,
    VideoError,
)

MB = 1024 * 1024
log = logging.getLogger("ferkit.web")

_CODES = {
    400: "bad_request", 403: "forbidden", 404: "not_found", 405: "method_not_allowed", 408: "request_timeout",
    409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type", 422: "unprocessable",
    429: "too_many_requests", 500: "internal_error", 501: "not_implemented", 503: "unavailable",
    507: "insufficient_storage",
}
# A write failed because the server's storage is full or capped: the server's state, not a bug.
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
STORAGE_FULL = "the server has no room to store this upload (its disk is full); try again later or send a smaller file"


class ApiError(Exception):
    """Raise anywhere in a request: becomes `status` with {error: code, detail}."""

    def __init__(self, status: int, detail: str, code: str | None = None, headers: dict | None = None):
        super().__init__(detail)
        self.status, self.detail, self.code = status, detail, code or _CODES.get(status, "error")
        self.headers = headers


def megabytes(n: int) -> str:
    """'3', '2.5', '10,240': a size in MB as a person writes it."""
    v = n / MB
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


class PayloadTooLarge(ApiError):
    def __init__(self, limit: int, what: str):
        super().__init__(413, f"{what} is larger than the limit of {megabytes(limit)} MB", "payload_too_large",
                         headers={"Connection": "close"})


def error_response(status: int, detail: str, code: str | None = None, headers: dict | None = None) -> JSONResponse:
    body = ErrorResponse(error=code or _CODES.get(status, "error"), detail=detail, status=status)
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def error_bytes(status: int, detail: str, code: str | None = None) -> bytes:
    """The JSON body of an error, for answers written below FastAPI (middleware, the protocol)."""
    body = ErrorResponse(error=code or _CODES.get(status, "error"), detail=detail, status=status)
    return json.dumps(body.model_dump()).encode()


def ferkit_error_status(exc: FerkitError) -> tuple[int, str]:
    """The HTTP status and error code of one of ferkit's own errors."""
    if isinstance(exc, ImageTooLargeError):
        return 413, "too_many_pixels"
    if isinstance(exc, ImageError):
        return 422, "unreadable_image"
    if isinstance(exc, VideoError):
        return 422, "unreadable_video"
    if isinstance(exc, OutputError):
        return 507, "insufficient_storage"
    if isinstance(exc, MissingExtraError):
        return 501, "missing_extra"
    if isinstance(exc, UsageError):
        return 400, "bad_request"
    return 400, "bad_request"


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for e in exc.errors():
        where = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "request"
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def _where(request: Request) -> str:
    return f"{request.method} {request.url.path}"


def bug_response(request: Request, exc: BaseException) -> JSONResponse:
    log.exception("unexpected error on %s", _where(request), exc_info=exc)
    return error_response(500, f"internal error ({type(exc).__name__}); this is a bug in ferkit, please report it")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return error_response(exc.status, exc.detail, exc.code, exc.headers)

    @app.exception_handler(FerkitError)
    async def _ferkit_error(request: Request, exc: FerkitError):
        status, code = ferkit_error_status(exc)
        if status == 507:  # the message names the server's own file: logged, not shown
            log.warning("%s: %s", _where(request), exc)
            return error_response(507, STORAGE_FULL, code)
        return error_response(status, str(exc), code)

    @app.exception_handler(OSError)
    async def _os_error(request: Request, exc: OSError):
        if exc.errno in STORAGE_ERRNOS:  # e.g. spooling a multipart upload to a full temp folder
            log.warning("%s: cannot store the upload: %s", _where(request), exc.strerror or exc)
            return error_response(507, STORAGE_FULL)
        return bug_response(request, exc)

    @app.exception_handler(ClientDisconnect)
    async def _client_gone(request: Request, exc: ClientDisconnect):
        client = request.client.host if request.client else "a client"
        log.info("%s disconnected during %s (request abandoned)", client, _where(request))
        return Response(status_code=499)  # nobody reads it; the access log shows the request was abandoned

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no such endpoint: {request.method} {request.url.path} (see /docs)"
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            allowed = _allowed_methods(request)
            detail = f"{request.method} is not allowed on {request.url.path}; use {', '.join(allowed)}"
            headers = {**(headers or {}), "Allow": ", ".join(allowed)}
        return error_response(exc.status_code, detail, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        return error_response(422, _validation_message(exc), "invalid_parameters")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):  # a bug of ours: still JSON, and the server lives on
        return bug_response(request, exc)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route accepts on this path (Starlette's own 405 names only the first route's)."""
    from starlette.routing import Match

    allowed = []
    for method in ("DELETE", "GET", "PATCH", "POST", "PUT"):
        scope = {**request.scope, "method": method, "type": "http"}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.routes):
            allowed.append(method)
    return allowed or ["GET"]
