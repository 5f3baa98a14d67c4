"""The page, the API docs, and what the service tells about itself: health, model card, limits."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse, HTMLResponse

import ferkit
from ferkit.apps.web import schemas
from ferkit.apps.web.middleware import CSP
from ferkit.apps.web.routes.common import API
from ferkit.apps.web.service import Service, get_service

STATIC = Path(__file__).resolve().parent.parent / "static"
SWAGGER_CDN = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5"
router = APIRouter()
ServiceDep = Annotated[Service, Depends(get_service)]


def swagger_ui_assets() -> Path | None:
    """Swagger UI's files from the `swagger-ui-py` package (serve extra), so /docs needs no CDN; else None."""
    import importlib.util

    spec = importlib.util.find_spec("swagger_ui")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        static = Path(folder) / "static"
        if (static / "swagger-ui-bundle.js").is_file() and (static / "swagger-ui.css").is_file():
            return static
    return None


SWAGGER_ASSETS = swagger_ui_assets()


@router.get("/", include_in_schema=False)
async def index():
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


@router.get("/docs", include_in_schema=False)
async def docs():
    """Swagger UI, self-hosted when the serve extra brought its files (this page works offline)."""
    base, csp = "/docs-assets", CSP
    if SWAGGER_ASSETS is None:
        base = SWAGGER_CDN
        csp = CSP.replace("script-src 'self'", f"script-src 'self' {SWAGGER_CDN}").replace(
            "style-src 'self'", f"style-src 'self' {SWAGGER_CDN}")
    html = (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>ferkit API</title>'
            f'<link rel="icon" href="/favicon.ico" type="image/svg+xml">'
            f'<link rel="stylesheet" href="{base}/swagger-ui.css"></head>\n'
            f'<body><div id="swagger-ui"></div>\n<script src="{base}/swagger-ui-bundle.js"></script>\n'
            f'<script src="/static/docs.js"></script></body></html>\n')
    return HTMLResponse(html, headers={"Content-Security-Policy": csp})


@router.get("/favicon.ico", include_in_schema=False)
async def favicon():
    return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")


@router.get(f"{API}/healthz", response_model=schemas.Health, tags=["service"], summary="Is the server up?")
async def healthz(svc: ServiceDep):
    a = svc.analyzer
    return schemas.Health(status="ok", version=ferkit.__version__, model=a.model.name, detector=a.detector.name,
                          uptime_s=round(time.time() - svc.started, 1), jobs=schemas.JobCounts(**svc.jobs.counts()),
                          streams=svc.streams)


@router.get("/healthz", include_in_schema=False)
async def healthz_root(svc: ServiceDep):
    return await healthz(svc)


@router.get(f"{API}/model", response_model=schemas.ModelInfo, tags=["service"], summary="The model card")
async def model_card(svc: ServiceDep):
    a = svc.analyzer
    card = a.model.card
    return schemas.ModelInfo(name=card.name, classes=list(card.classes), architecture=card.architecture,
                             file=a.model.path.name, runs=a.model.file.name, precision=a.model.precision,
                             detector=a.detector.name, tta=a.model.tta,
                             live_tta=svc.live_analyzer.model.tta, input=card.input, output=card.output,
                             metrics=card.metrics, training=card.training, notes=card.notes)


@router.get(f"{API}/limits", response_model=schemas.Limits, tags=["service"], summary="Upload limits of this server")
async def limits(svc: ServiceDep):
    s = svc.settings
    return schemas.Limits(max_upload_mb=s.max_upload_mb, max_video_mb=s.max_video_mb, max_pixels=s.max_pixels,
                          max_video_frames=s.max_video_frames)
