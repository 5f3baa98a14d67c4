"""Video jobs: POST a video, poll its status and progress, fetch its annotated video, CSV and chart."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse

from ferkit.apps.web import schemas
from ferkit.apps.web.errors import ApiError
from ferkit.apps.web.jobs import Job
from ferkit.apps.web.media import VIDEO_FORMATS, sniff_image, sniff_video
from ferkit.apps.web.routes.common import API, JOB_ID, VIDEO_BODY, VIDEOS, errors
from ferkit.apps.web.service import Service, get_service
from ferkit.apps.web.uploads import form_file, is_multipart, storage_errors, stream_body

router = APIRouter()
ServiceDep = Annotated[Service, Depends(get_service)]


@router.post(VIDEOS, response_model=schemas.VideoJob, status_code=202, tags=["videos"],
             summary="Start annotating a video", responses=errors(400, 413, 415, 422, 429, 503),
             openapi_extra={"requestBody": VIDEO_BODY})
async def create_video(request: Request, svc: ServiceDep):
    svc.jobs.check_capacity()
    try:
        job = await _save_video(request, svc)
    finally:
        await request.close()
    svc.jobs.submit(job)
    return job_model(svc, job)


def _format_of(head: bytes, name: str) -> str:
    """The upload's container as a file suffix, or a 4xx saying why it is not a video we take."""
    if not head:
        raise ApiError(400, f"{name}: empty (0 bytes); send a video ({VIDEO_FORMATS})", "empty_upload")
    suffix = sniff_video(head)
    if suffix is None:
        if sniff_image(head):
            raise ApiError(415, f"{name}: this is a still image; POST images to {API}/predict", "image_not_video")
        raise ApiError(415, f"{name}: not a video in a format we read ({VIDEO_FORMATS})", "unsupported_media_type")
    return suffix


def _head(path: Path, n: int = 512) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(n)


async def _save_video(request: Request, svc: Service) -> Job:
    """Store the upload in a new job's folder, chunk by chunk as it arrives, and check it opens as a video."""
    form = is_multipart(request)
    upload = await form_file(request) if form else None  # Starlette has spooled the part to a temporary file
    job = svc.jobs.new_job(upload.name if upload else "video")
    try:
        if upload is not None:
            suffix = _format_of(await anyio.to_thread.run_sync(upload.head), upload.name)
            await anyio.to_thread.run_sync(upload.copy_to, job.store_as(suffix))
        else:
            part = job.dir / "upload.part"
            with storage_errors():
                fh = await anyio.to_thread.run_sync(open, part, "wb")
            with fh:
                await stream_body(request, fh)
            suffix = _format_of(await anyio.to_thread.run_sync(_head, part), "the request body")
            job.filename = f"video{suffix}"
            part.rename(job.store_as(suffix))
        await anyio.to_thread.run_sync(_probe_video, svc, job)
    except BaseException:
        shutil.rmtree(job.dir, ignore_errors=True)
        raise
    finally:
        if upload is not None:
            upload.close()
    return job


def _probe_video(svc: Service, job: Job) -> None:
    """The upload opens as a video of sensible frame size and yields a first frame, or a 4xx naming it."""
    from ferkit.errors import VideoError
    from ferkit.runtime.video import open_video

    max_pixels, name = svc.settings.max_pixels, job.filename
    try:
        cap, info = open_video(job.source, 2**62)  # the server's own limit is checked below, to answer 413
    except VideoError as exc:
        raise ApiError(422, svc.jobs.public(str(exc), job), "unreadable_video") from None
    try:
        if info.width * info.height > max_pixels:  # before decoding a frame of that size
            raise ApiError(413, f"{name}: {info.width}x{info.height} frames are over the limit of {max_pixels:,} "
                                "pixels", "too_many_pixels")
        ok, frame = cap.read()
    finally:
        cap.release()
    if not ok or frame is None:
        raise ApiError(422, f"{name}: no frame could be decoded (truncated or corrupt video)", "unreadable_video")


@router.get(f"{VIDEOS}/{{job_id}}", response_model=schemas.VideoJob, tags=["videos"],
            summary="A video job's status, progress and results", responses=errors(404, 422))
async def get_video(job_id: JOB_ID, svc: ServiceDep):
    return job_model(svc, svc.jobs.get(job_id))


@router.delete(f"{VIDEOS}/{{job_id}}", status_code=204, tags=["videos"],
               summary="Cancel a video job and delete its files", responses=errors(404, 422))
async def delete_video(job_id: JOB_ID, svc: ServiceDep):
    await anyio.to_thread.run_sync(svc.jobs.delete, job_id)


@router.get(f"{VIDEOS}/{{job_id}}/files/{{kind}}", tags=["videos"], summary="A finished job's file",
            response_class=FileResponse, responses={
                200: {"description": "video: H.264 MP4; csv: per-frame faces; plot: emotions over time (PNG)",
                      "content": {"video/mp4": {}, "text/csv": {}, "image/png": {}}},
                **errors(404, 409, 422)})
async def video_file(job_id: JOB_ID, kind: schemas.VideoFile, svc: ServiceDep,
                     download: Annotated[bool, Query(description="Ask the browser to save the file.")] = False):
    job = svc.jobs.get(job_id)
    if job.status != "done":
        raise ApiError(409, f"video job {job_id} is {job.status}; its files exist once it is done", "not_ready")
    path = svc.jobs.outputs(job)[kind.value]
    if not path.is_file():
        raise ApiError(404, f"video job {job_id} has no {kind.value} file (expired?)", "no_file")
    stem = Path(job.filename).stem or "video"
    media = {"video": "video/mp4", "csv": "text/csv", "plot": "image/png"}[kind.value]
    ext = {"video": ".annotated" + path.suffix, "csv": ".csv", "plot": ".emotions.png"}[kind.value]
    return FileResponse(path, media_type=media, filename=f"{stem}{ext}",
                        content_disposition_type="attachment" if download else "inline")


def job_model(svc: Service, job: Job) -> schemas.VideoJob:
    base = f"{VIDEOS}/{job.id}"
    result = None
    if job.status == "done" and job.report is not None:
        r = job.report
        result = schemas.VideoResult(frames=r["frames"], analysed=r["analysed"], fps=round(r["fps"], 3),
                                     faces=r["faces"], tracks=r["tracks"], seconds=round(r["seconds"], 2),
                                     labels=job.labels, video_url=f"{base}/files/video", csv_url=f"{base}/files/csv",
                                     plot_url=f"{base}/files/plot")
    return schemas.VideoJob(
        id=job.id, status=job.status, filename=job.filename, progress=job.progress, frames_done=job.frames_done,
        frames_total=job.frames_total, created=job.created, finished=job.finished,
        expires=job.finished + svc.settings.job_ttl_s if job.finished else None, error=job.error,
        warnings=job.warnings, result=result, url=base)
