"""POST /api/v1/predict: faces and expressions in one image."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from ferkit.apps.web import schemas
from ferkit.apps.web.routes.common import API, IMAGE_BODY, errors
from ferkit.apps.web.service import Service, get_service
from ferkit.apps.web.uploads import receive_upload

router = APIRouter()


@router.post(f"{API}/predict", response_model=schemas.PredictResponse, tags=["images"],
             summary="Faces and expressions in an image",
             responses=errors(400, 413, 415, 422), openapi_extra={"requestBody": IMAGE_BODY})
async def predict(request: Request, svc: Annotated[Service, Depends(get_service)],
                  annotate: Annotated[bool, Query(description="Also return the image with boxes and labels drawn.")] = False):
    upload = None
    try:
        upload = await receive_upload(request, svc.spool_dir)  # to disk as it arrives; read whole only to decode
        return await svc.run(svc.predict, upload, annotate)
    finally:
        if upload is not None:
            upload.close()
        await request.close()  # spooled multipart files
