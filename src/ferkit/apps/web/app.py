"""The ASGI app: a page at `/`, the JSON API under `/api/v1`, a WebSocket for live frames, MJPEG streams.

`create_app(settings)` builds one `Service` (one model, the analyzers, the job manager, the work folder),
puts it on `app.state`, and mounts the routers of `ferkit.apps.web.routes`, which get it by dependency.
Inference runs in worker threads, at most `inference_threads` at a time, never on the event loop; video
jobs run in their own bounded pool, each job in a worker process of its own.

Around the routes: security headers on every answer, the request-body size limit, and the minimum
upload rate (slow clients are cut off). The connection-level guards (header timeout, fair use of
connection slots) are in `protocol.py`, which `ferkit serve` hands to uvicorn.
"""

from __future__ import annotations

import asyncio
import contextlib

import anyio
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

import ferkit
from ferkit.apps.web.errors import install_error_handlers
from ferkit.apps.web.middleware import BodyLimitMiddleware, MinUploadRateMiddleware, SecurityHeadersMiddleware
from ferkit.apps.web.routes import images, live, meta, streams, videos
from ferkit.apps.web.routes.common import API, VIDEOS
from ferkit.apps.web.service import Service
from ferkit.apps.web.settings import Settings


def _description(settings: Settings) -> str:
    return (
        "Every error is JSON: `{error, detail, status}`.\n\n"
        f"Limits: images up to {settings.max_upload_mb:g} MB and {settings.max_pixels:,} pixels; videos up to "
        f"{settings.max_video_mb:g} MB and {settings.max_video_frames:,} frames.\n\n"
        f"Live frames: a WebSocket at `{API}/live` takes binary image messages (JPEG/PNG/WebP) and answers each "
        "with JSON `{faces, width, height, ms}` (faces as in `/predict`, with `track_id`), or `{error}`."
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    """The web app. Loads the model now (so a bad --model fails at start, not on the first request)."""
    settings = (settings or Settings()).validate()
    svc = Service(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        async def sweeper():
            while True:
                await asyncio.sleep(max(1.0, min(60.0, settings.job_ttl_s / 4)))
                await anyio.to_thread.run_sync(svc.jobs.sweep)

        task = asyncio.create_task(sweeper())
        try:
            yield
        finally:
            task.cancel()
            await anyio.to_thread.run_sync(svc.close)

    app = FastAPI(docs_url=None, title="ferkit", version=ferkit.__version__,
                  summary="Facial expression recognition: faces in images, videos and live camera frames.",
                  description=_description(settings), lifespan=lifespan)
    app.state.service = svc
    app.state.settings = settings
    install_error_handlers(app)

    def limit_for(scope) -> int:
        if scope.get("path") == VIDEOS and scope.get("method") == "POST":
            return settings.max_video_bytes
        return settings.max_upload_bytes

    # added last = outermost: headers on every answer, then the size limit before anything is read
    app.add_middleware(MinUploadRateMiddleware, grace_s=settings.client_timeout_s, min_rate=settings.min_upload_rate)
    app.add_middleware(BodyLimitMiddleware, limit_for=limit_for)
    app.add_middleware(SecurityHeadersMiddleware)

    app.mount("/static", StaticFiles(directory=meta.STATIC), name="static")
    if meta.SWAGGER_ASSETS is not None:
        app.mount("/docs-assets", StaticFiles(directory=meta.SWAGGER_ASSETS), name="swagger-ui")
    for module in (meta, images, videos, streams, live):
        app.include_router(module.router)
    return app
