"""The live WebSocket: binary image messages in, JSON faces (tracked across frames) out."""

from __future__ import annotations

import json
import time
from typing import Annotated

from fastapi import APIRouter, Depends, WebSocket, WebSocketDisconnect

from ferkit.apps.web.errors import ApiError
from ferkit.apps.web.media import decode_upload
from ferkit.apps.web.middleware import origin_allowed
from ferkit.apps.web.routes.common import API
from ferkit.apps.web.service import Service, get_service, ms_since

router = APIRouter()


@router.websocket(f"{API}/live")
async def live(ws: WebSocket, svc: Annotated[Service, Depends(get_service)]):
    from ferkit.runtime.tracking import FaceTracker

    settings = svc.settings
    ok, origin = origin_allowed(ws.headers, settings.allowed_origins)
    if not ok:  # before accepting: the browser sees the handshake refused (HTTP 403)
        await ws.close(code=1008, reason=f"pages from {origin} may not use this server's live endpoint")
        return
    await ws.accept()
    analyzer = svc.live_analyzer
    tracker = FaceTracker(analyzer.classes, alpha=0.5)
    step = 0

    def analyse(data: bytes) -> dict:
        nonlocal step
        t0 = time.perf_counter()
        img = decode_upload(data, "frame", settings.max_pixels)
        faces = tracker.update(analyzer.analyze(img), step)
        step += 1
        return {"faces": [f.to_dict() for f in faces], "width": int(img.shape[1]), "height": int(img.shape[0]),
                "ms": ms_since(t0)}

    try:
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                break
            data = msg.get("bytes")
            if data is None:
                text = msg.get("text") or ""
                if text.strip() == "ping":
                    await ws.send_text(json.dumps({"pong": True}))
                    continue
                await ws.send_text(json.dumps({"error": "send each frame as a binary message (JPEG, PNG or WebP)"}))
                continue
            if len(data) > settings.max_upload_bytes:
                await ws.send_text(json.dumps({"error": f"frame is larger than {settings.max_upload_mb:g} MB"}))
                continue
            try:
                reply = await svc.run(analyse, data)
            except ApiError as exc:
                reply = {"error": exc.detail}
            await ws.send_text(json.dumps(reply))
    except WebSocketDisconnect:
        pass
