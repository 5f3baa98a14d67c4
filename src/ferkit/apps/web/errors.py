"""One error shape for every bad request ({error, detail, status}), and the request-body size limit.

The limit is pure ASGI middleware: a Content-Length over the limit is answered 413 before the body is
read; a body without one (chunked) is counted as it arrives and stopped at the limit.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ferkit.apps.web.schemas import ErrorResponse

MB = 1024 * 1024

_CODES = {
    400: "bad_request", 403: "forbidden", 404: "not_found", 405: "method_not_allowed", 409: "conflict",
    413: "payload_too_large", 415: "unsupported_media_type", 422: "unprocessable", 429: "too_many_requests",
    500: "internal_error", 503: "unavailable",
}


class ApiError(Exception):
    """Raise anywhere in a request: becomes `status` with {error: code, detail}."""

    def __init__(self, status: int, detail: str, code: str | None = None, headers: dict | None = None):
        super().__init__(detail)
        self.status, self.detail, self.code = status, detail, code or _CODES.get(status, "error")
        self.headers = headers


def error_response(status: int, detail: str, code: str | None = None, headers: dict | None = None) -> JSONResponse:
    body = ErrorResponse(error=code or _CODES.get(status, "error"), detail=detail, status=status)
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for e in exc.errors():
        where = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "request"
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return error_response(exc.status, exc.detail, exc.code, exc.headers)

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
        import logging

        logging.getLogger("ferkit.web").exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, f"internal error ({type(exc).__name__}); this is a bug in ferkit, please report it")


def _allowed_methods(request: Request) -> list[str]:
    """Every method the routes matching this path accept (Starlette's own 405 names only the first route's)."""
    from starlette.routing import Match

    methods: set[str] = set()
    for route in request.app.routes:
        match, _ = route.matches({**request.scope, "method": "GET", "type": "http"})
        if match != Match.NONE and getattr(route, "methods", None):
            methods |= set(route.methods)
    return sorted(methods) or ["GET"]


class PayloadTooLarge(ApiError):
    def __init__(self, limit: int, what: str):
        super().__init__(413, f"{what} is larger than the limit of {limit / MB:.4g} MB", "payload_too_large")


def _json_bytes(status: int, detail: str, code: str) -> bytes:
    return json.dumps(ErrorResponse(error=code, detail=detail, status=status).model_dump()).encode()


class BodyLimitMiddleware:
    """Refuse request bodies over `limit_for(scope)` bytes with 413 (JSON)."""

    DRAIN = 32 * MB  # read and drop at most this much of an announced-too-large body, so clients see the 413

    def __init__(self, app, limit_for: Callable[[dict], int]):
        self.app, self.limit_for = app, limit_for

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit_for(scope)
        length = None
        for k, v in scope.get("headers", ()):
            if k == b"content-length":
                try:
                    length = int(v)
                except ValueError:
                    return await self._reply(send, 400, "Content-Length is not a number", "bad_request")
        if length is not None and length > limit:
            if length <= limit + self.DRAIN:  # drain so the client reads our answer instead of a reset connection
                more = True
                while more:
                    msg = await receive()
                    more = msg.get("type") == "http.request" and msg.get("more_body", False)
            return await self._reply(send, 413, f"request body of {length / MB:.4g} MB is larger than the limit of "
                                                f"{limit / MB:.4g} MB", "payload_too_large")
        seen = 0

        async def limited():
            nonlocal seen
            msg = await receive()
            if msg.get("type") == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    raise PayloadTooLarge(limit, "request body")
            return msg

        await self.app(scope, limited, send)

    @staticmethod
    async def _reply(send, status: int, detail: str, code: str) -> None:
        body = _json_bytes(status, detail, code)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
