"""GET /api/v1/stream: MJPEG of an annotated camera (with --cameras) or a video file of the media folder."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from ferkit.apps.web.errors import ApiError
from ferkit.apps.web.routes.common import API, check_origin, errors
from ferkit.apps.web.service import Service, get_service
from ferkit.apps.web.stream import BOUNDARY, mjpeg, open_capture, resolve_source

router = APIRouter()


@router.get(f"{API}/stream", tags=["streams"], summary="MJPEG of an annotated camera or video file",
            response_class=StreamingResponse,
            responses={200: {"description": "multipart/x-mixed-replace JPEG frames: put the URL in an <img src>.",
                             "content": {f"multipart/x-mixed-replace; boundary={BOUNDARY}": {}}},
                       **errors(400, 403, 404, 422, 429)})
async def stream(
    request: Request,
    svc: Annotated[Service, Depends(get_service)],
    source: Annotated[str, Query(max_length=300, description="A camera index (0, 1, …) or a video file name "
                                                              "inside the server's --media-dir.")],
    frames: Annotated[int | None, Query(ge=1, le=1_000_000, description="Stop after this many frames.")] = None,
):
    settings = svc.settings
    check_origin(request.headers, settings.allowed_origins, "the stream")
    src = resolve_source(source, settings.media_dir, settings.allow_cameras)
    if svc.streams >= settings.max_streams:
        raise ApiError(429, f"{svc.streams} streams are already playing (the limit); try again later", "busy",
                       headers={"Retry-After": "10"})
    cap, fps = await anyio.to_thread.run_sync(open_capture, src, settings.max_pixels)
    svc.streams += 1
    released = False

    def on_close():
        nonlocal released
        if not released:
            released = True
            svc.streams -= 1

    return StreamingResponse(mjpeg(cap, fps, svc.live_analyzer, svc.limiter, on_close, frames),
                             media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                             headers={"Cache-Control": "no-store"})
