"""What the route modules share: the API prefix, error documentation for OpenAPI, request bodies, the
Origin check of the browser-facing live endpoints."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path as PathParam

from ferkit.apps.web import schemas
from ferkit.apps.web.errors import ApiError
from ferkit.apps.web.media import IMAGE_FORMATS, VIDEO_FORMATS
from ferkit.apps.web.middleware import origin_allowed

API = "/api/v1"
VIDEOS = f"{API}/videos"
JOB_ID = Annotated[str, PathParam(pattern=r"^[0-9a-f]{32}$", description="A video job id (32 hex digits).")]


def errors(*codes: int) -> dict:
    """OpenAPI `responses` for these error statuses, all of them ErrorResponse."""
    return {c: {"model": schemas.ErrorResponse, "description": schemas.ErrorResponse.__doc__ or ""} for c in codes}


IMAGE_BODY = {
    "required": True,
    "description": f"The image, as a multipart/form-data part named `file`, or as the raw request body ({IMAGE_FORMATS}). "
                   "The format is told from the bytes; the declared type and the file name are ignored.",
    "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                           "properties": {"file": {"type": "string", "format": "binary"}}}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}
VIDEO_BODY = {
    "required": True,
    "description": f"The video, as a multipart/form-data part named `file`, or as the raw request body ({VIDEO_FORMATS}).",
    "content": IMAGE_BODY["content"],
}


def check_origin(headers, allowed: tuple[str, ...], what: str) -> None:
    """403 unless the request comes from no browser page, this server's own page, or an allowed origin."""
    ok, origin = origin_allowed(headers, allowed)
    if not ok:
        raise ApiError(403, f"{what} is not open to pages from {origin}: only this server's own page may use it "
                            "(start the server with --allow-origin ORIGIN to allow another)", "origin_not_allowed")
