"""Pure ASGI middleware: request-body size limit, minimum upload rate, security headers on every answer.

* Size: a Content-Length over the limit is answered 413 before any of the body is read; a body without
  one (chunked) is counted as it arrives and stopped at the limit.
* Rate: after a grace period a body must keep arriving at a minimum rate (a client that trickles bytes, or
  stops sending, gets 408 and its connection is closed), so slow clients cannot hold server slots.
* Headers: nosniff, no framing, no referrer, and a Content-Security-Policy the page itself satisfies.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio

from ferkit.apps.web.errors import MB, ApiError, PayloadTooLarge, error_bytes, megabytes

# The page loads only its own scripts, styles and media; data:/blob: for the annotated photo and thumbnails.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"content-security-policy", CSP.encode()),
]


async def reply(send, status: int, detail: str, code: str | None = None) -> None:
    """A JSON error written straight to the ASGI `send` (the connection is closed after it)."""
    body = error_bytes(status, detail, code)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def content_length(scope) -> int | None:
    """The announced body size; None when absent; ValueError when not a number."""
    for k, v in scope.get("headers", ()):
        if k == b"content-length":
            return int(v)
    return None


class BodyLimitMiddleware:
    """Refuse request bodies over `limit_for(scope)` bytes with 413 (JSON)."""

    DRAIN = 32 * MB  # read and drop at most this much of an announced-too-large body, so clients see the 413

    def __init__(self, app, limit_for: Callable[[dict], int]):
        self.app, self.limit_for = app, limit_for

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit_for(scope)
        try:
            length = content_length(scope)
        except ValueError:
            return await reply(send, 400, "Content-Length is not a number", "bad_request")
        if length is not None and length > limit:
            if length <= limit + self.DRAIN:  # drain so the client reads our answer instead of a reset connection
                more = True
                while more:
                    msg = await receive()
                    more = msg.get("type") == "http.request" and msg.get("more_body", False)
            return await reply(send, 413, f"request body of {megabytes(length)} MB is larger than the limit of "
                                          f"{megabytes(limit)} MB", "payload_too_large")
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


class MinUploadRateMiddleware:
    """A request body must arrive within `grace_s` plus its size at `min_rate` bytes/s, else 408.

    Checked at every read of the body: a read that would wait past the allowance is given up, so a client
    that sends nothing at all is cut off too.
    """

    def __init__(self, app, grace_s: float, min_rate: float):
        self.app, self.grace_s, self.min_rate = app, grace_s, min_rate

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.monotonic()
        got = 0

        async def paced():
            nonlocal got
            wait = start + self.grace_s + got / self.min_rate - time.monotonic()
            msg = None
            if wait > 0:
                with anyio.move_on_after(wait):
                    msg = await receive()
            if msg is None:
                raise ApiError(408, f"the request body arrived too slowly ({got:,} bytes in "
                                    f"{time.monotonic() - start:.0f} s; at least {self.min_rate / 1024:g} KiB/s "
                                    f"after {self.grace_s:g} s); the connection is closed", "request_timeout",
                               headers={"Connection": "close"})
            if msg.get("type") == "http.request":
                got += len(msg.get("body", b""))
            return msg

        await self.app(scope, paced, send)


class SecurityHeadersMiddleware:
    """Add SECURITY_HEADERS to every HTTP response (answers of this app and of Starlette alike)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers", ())}
                message = {**message, "headers": [*message.get("headers", ()),
                                                  *(h for h in SECURITY_HEADERS if h[0] not in have)]}
            await send(message)

        await self.app(scope, receive, with_headers)


def origin_allowed(headers, allowed: tuple[str, ...]) -> tuple[bool, str]:
    """(ok, origin) for a browser request: no Origin header (curl, scripts) is fine; else it must be this
    server's own origin (the Host it was reached at) or one of `allowed`."""
    origin = headers.get("origin")
    if origin is None:
        return True, ""
    origin = origin.strip().rstrip("/").lower()
    host = (headers.get("host") or "").lower()
    if host and origin in (f"http://{host}", f"https://{host}"):
        return True, origin
    return origin in allowed, origin
