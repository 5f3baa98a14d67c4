"""The ASGI app: a page at `/`, the JSON API under `/api/v1`, a WebSocket for live frames, MJPEG streams.

One `Analyzer` (one model, one detector) is shared by every request. Inference runs in worker threads,
at most `inference_threads` at a time, never on the event loop; video jobs run in their own bounded
pool (`jobs.JobManager`), each job in a child process of its own.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Annotated

import anyio
import cv2
import numpy as np
from fastapi import FastAPI, Path as PathParam, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import UploadFile

import ferkit
from ferkit.apps.web import schemas
from ferkit.apps.web.errors import ApiError, BodyLimitMiddleware, install_error_handlers
from ferkit.apps.web.jobs import JobManager
from ferkit.apps.web.media import IMAGE_FORMATS, VIDEO_FORMATS, decode_upload, sniff_image, sniff_video
from ferkit.apps.web.settings import Settings

log = logging.getLogger("ferkit.web")
STATIC = Path(__file__).resolve().parent / "static"
API = "/api/v1"
JOB_ID = Annotated[str, PathParam(pattern=r"^[0-9a-f]{32}$", description="A video job id (32 hex digits).")]
ANNOTATED_MAX_SIDE = 1600  # annotated images are returned at most this large


def _errors(*codes: int) -> dict:
    return {c: {"model": schemas.ErrorResponse, "description": schemas.ErrorResponse.__doc__ or ""} for c in codes}


_IMAGE_BODY = {
    "required": True,
    "description": f"The image, as a multipart/form-data part named `file`, or as the raw request body ({IMAGE_FORMATS}). "
                   "The format is told from the bytes; the declared type and the file name are ignored.",
    "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                           "properties": {"file": {"type": "string", "format": "binary"}}}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}
_VIDEO_BODY = {
    "required": True,
    "description": f"The video, as a multipart/form-data part named `file`, or as the raw request body ({VIDEO_FORMATS}).",
    "content": _IMAGE_BODY["content"],
}


async def _read_upload(request: Request) -> tuple[bytes | UploadFile, str]:
    """The uploaded file of a multipart body (an UploadFile) or the raw body (bytes), and a display name."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=16)
        files = [v for k, v in form.multi_items() if isinstance(v, UploadFile)]
        if not files:
            raise ApiError(400, "the multipart body has no file part: send the file as a part named 'file'", "no_file")
        f = next((v for k, v in form.multi_items() if isinstance(v, UploadFile) and k in ("file", "image", "video")),
                 files[0])
        return f, _display_name(f.filename) or "the uploaded file"
    # Anything else is the file itself, whatever type it declares (curl --data-binary says form-urlencoded).
    return await request.body(), "the request body"


def _display_name(name: str | None) -> str:
    name = Path(name or "").name.replace("\x00", "")
    return "".join(ch for ch in name if ch.isprintable())[:120]


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 2)


def _data_url(bgr: np.ndarray) -> str:
    h, w = bgr.shape[:2]
    if max(h, w) > ANNOTATED_MAX_SIDE:
        s = ANNOTATED_MAX_SIDE / max(h, w)
        bgr = cv2.resize(bgr, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 88])
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode()


class Service:
    """State shared by the routes: the analyzer, the inference limiter, jobs, streams."""

    def __init__(self, settings: Settings):
        from ferkit.runtime.model import FacialExpressionModel, live_tta
        from ferkit.runtime.pipeline import Analyzer

        self.settings = settings
        analyzer_args = dict(model=None if settings.model is None else str(settings.model), detector=settings.detector,
                             min_score=settings.min_score, max_side=settings.detect_size, threads=settings.model_threads)
        self.analyzer = Analyzer(**analyzer_args)  # photos: the card's TTA
        # frames (browser webcam, MJPEG streams, video jobs): TTA capped at flip, sharing the detector
        tta = live_tta(self.analyzer.model.tta)
        self.live_analyzer = self.analyzer if tta == self.analyzer.model.tta else Analyzer(
            FacialExpressionModel(analyzer_args["model"], threads=settings.model_threads, tta=tta),
            self.analyzer.detector, min_score=settings.min_score)
        self.limiter = anyio.CapacityLimiter(settings.inference_threads)
        own = settings.work_dir is None
        self.work_dir = Path(tempfile.mkdtemp(prefix="ferkit-serve-")) if own else Path(settings.work_dir)
        self.jobs = JobManager({**analyzer_args, "live": True}, self.work_dir / "jobs", settings.workers, settings.max_queued_jobs,
                               settings.job_ttl_s, settings.max_video_frames)
        self._own_work_dir = own
        self.streams = 0
        self.started = time.time()

    # inference, in a worker thread
    def predict(self, data: bytes, name: str, annotate: bool) -> dict:
        t0 = time.perf_counter()
        img = decode_upload(data, name, self.settings.max_pixels)
        t1 = time.perf_counter()
        faces = self.analyzer.analyze(img)
        out = {
            "model": self.analyzer.model.name, "detector": self.analyzer.detector.name,
            "width": int(img.shape[1]), "height": int(img.shape[0]), "classes": list(self.analyzer.classes),
            "faces": [f.to_dict() for f in faces],
            "timings_ms": {"decode": round((t1 - t0) * 1000, 2), "analyze": _ms(t1)},
        }
        if annotate:
            from ferkit.runtime.draw import draw_results

            out["annotated_image"] = _data_url(draw_results(img, faces, copy=False))
        return out

    async def run(self, fn, *args):
        return await anyio.to_thread.run_sync(fn, *args, limiter=self.limiter)

    def close(self) -> None:
        self.jobs.shutdown()
        if self._own_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The web app. Loads the model now (so a bad --model fails at start, not on the first request)."""
    settings = (settings or Settings()).validate()
    svc = Service(settings)
    analyzer = svc.analyzer

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

    swagger_assets = _swagger_ui_assets()
    app = FastAPI(
        docs_url=None if swagger_assets else "/docs",  # self-hosted below: /docs works without the internet
        title="ferkit",
        version=ferkit.__version__,
        summary="Facial expression recognition: faces in images, videos and live camera frames.",
        description=(
            "Every error is JSON: `{error, detail, status}`.\n\n"
            f"Limits: images up to {settings.max_upload_mb:g} MB and {settings.max_pixels:,} pixels; videos up to "
            f"{settings.max_video_mb:g} MB and {settings.max_video_frames:,} frames.\n\n"
            f"Live frames: a WebSocket at `{API}/live` takes binary image messages (JPEG/PNG/WebP) and answers each "
            "with JSON `{faces, width, height, ms}` (faces as in `/predict`, with `track_id`), or `{error}`."
        ),
        lifespan=lifespan,
    )
    app.state.service = svc
    app.state.settings = settings
    install_error_handlers(app)
    video_path = f"{API}/videos"

    def limit_for(scope) -> int:
        if scope.get("path") == video_path and scope.get("method") == "POST":
            return settings.max_video_bytes
        return settings.max_upload_bytes

    app.add_middleware(BodyLimitMiddleware, limit_for=limit_for)

    # -- page ---------------------------------------------------------------------------------------------
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    if swagger_assets:
        from fastapi.openapi.docs import get_swagger_ui_html

        app.mount("/docs-assets", StaticFiles(directory=swagger_assets), name="swagger-ui")

        @app.get("/docs", include_in_schema=False)
        async def docs():
            return get_swagger_ui_html(openapi_url=app.openapi_url, title="ferkit API",
                                       swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                       swagger_css_url="/docs-assets/swagger-ui.css",
                                       swagger_favicon_url="/favicon.ico")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon():
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

    # -- API ----------------------------------------------------------------------------------------------
    @app.get(f"{API}/healthz", response_model=schemas.Health, tags=["service"], summary="Is the server up?")
    async def healthz():
        return schemas.Health(status="ok", version=ferkit.__version__, model=analyzer.model.name,
                              detector=analyzer.detector.name, uptime_s=round(time.time() - svc.started, 1),
                              jobs=schemas.JobCounts(**svc.jobs.counts()), streams=svc.streams)

    @app.get("/healthz", include_in_schema=False)
    async def healthz_root():
        return await healthz()

    @app.get(f"{API}/model", response_model=schemas.ModelInfo, tags=["service"], summary="The model card")
    async def model_card():
        card = analyzer.model.card
        return schemas.ModelInfo(name=card.name, classes=list(card.classes), architecture=card.architecture,
                                 file=analyzer.model.path.name, detector=analyzer.detector.name, tta=analyzer.model.tta,
                                 live_tta=svc.live_analyzer.model.tta,
                                 input=card.input, output=card.output, metrics=card.metrics, training=card.training,
                                 notes=card.notes)

    @app.get(f"{API}/limits", response_model=schemas.Limits, tags=["service"], summary="Upload limits of this server")
    async def limits():
        return schemas.Limits(max_upload_mb=settings.max_upload_mb, max_video_mb=settings.max_video_mb,
                              max_pixels=settings.max_pixels, max_video_frames=settings.max_video_frames)

    @app.post(f"{API}/predict", response_model=schemas.PredictResponse, tags=["images"],
              summary="Faces and expressions in an image",
              responses=_errors(400, 413, 415, 422), openapi_extra={"requestBody": _IMAGE_BODY})
    async def predict(request: Request,
                      annotate: Annotated[bool, Query(description="Also return the image with boxes and labels drawn.")] = False):
        try:
            upload, name = await _read_upload(request)
            data = await upload.read() if isinstance(upload, UploadFile) else upload
        finally:
            await request.close()  # spooled multipart files
        return await svc.run(svc.predict, data, name, annotate)

    @app.post(video_path, response_model=schemas.VideoJob, status_code=202, tags=["videos"],
              summary="Start annotating a video", responses=_errors(400, 413, 415, 422, 429, 503),
              openapi_extra={"requestBody": _VIDEO_BODY})
    async def create_video(request: Request):
        svc.jobs.check_capacity()
        try:
            job = await _save_video(request)
        finally:
            await request.close()
        svc.jobs.submit(job)
        return _job_model(svc, job)

    async def _save_video(request: Request):
        upload, name = await _read_upload(request)
        if isinstance(upload, UploadFile):
            head = await upload.read(512)
            await upload.seek(0)
        else:
            head = upload[:512]
        if not head:
            raise ApiError(400, f"{name}: empty (0 bytes); send a video ({VIDEO_FORMATS})", "empty_upload")
        suffix = sniff_video(head)
        if suffix is None:
            if sniff_image(head):
                raise ApiError(415, f"{name}: this is a still image; POST images to {API}/predict", "image_not_video")
            raise ApiError(415, f"{name}: not a video in a format we read ({VIDEO_FORMATS})", "unsupported_media_type")
        job = svc.jobs.new_job(name if isinstance(upload, UploadFile) else f"video{suffix}", suffix)
        try:
            if isinstance(upload, UploadFile):
                def copy():
                    with open(job.source, "wb") as dst:
                        shutil.copyfileobj(upload.file, dst, 1024 * 1024)
                await anyio.to_thread.run_sync(copy)
            else:
                await anyio.to_thread.run_sync(job.source.write_bytes, upload)
            await anyio.to_thread.run_sync(_probe_video, job.source, name, settings.max_pixels)
        except BaseException:
            shutil.rmtree(job.dir, ignore_errors=True)
            raise
        return job

    @app.get(f"{video_path}/{{job_id}}", response_model=schemas.VideoJob, tags=["videos"],
             summary="A video job's status, progress and results", responses=_errors(404, 422))
    async def get_video(job_id: JOB_ID):
        return _job_model(svc, svc.jobs.get(job_id))

    @app.delete(f"{video_path}/{{job_id}}", status_code=204, tags=["videos"],
                summary="Cancel a video job and delete its files", responses=_errors(404, 422))
    async def delete_video(job_id: JOB_ID):
        await anyio.to_thread.run_sync(svc.jobs.delete, job_id)

    @app.get(f"{video_path}/{{job_id}}/files/{{kind}}", tags=["videos"], summary="A finished job's file",
             response_class=FileResponse, responses={
                 200: {"description": "video: H.264 MP4; csv: per-frame faces; plot: emotions over time (PNG)",
                       "content": {"video/mp4": {}, "text/csv": {}, "image/png": {}}},
                 **_errors(404, 409, 422)})
    async def video_file(job_id: JOB_ID, kind: schemas.VideoFile,
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

    @app.get(f"{API}/stream", tags=["streams"], summary="MJPEG of an annotated camera or video file",
             response_class=StreamingResponse,
             responses={200: {"description": "multipart/x-mixed-replace JPEG frames: put the URL in an <img src>.",
                              "content": {"multipart/x-mixed-replace; boundary=ferkitframe": {}}},
                        **_errors(400, 403, 404, 422, 429)})
    async def stream(
        source: Annotated[str, Query(max_length=300, description="A camera index (0, 1, …) or a video file name "
                                                                  "inside the server's --media-dir.")],
        frames: Annotated[int | None, Query(ge=1, le=1_000_000, description="Stop after this many frames.")] = None,
    ):
        from ferkit.apps.web.stream import BOUNDARY, mjpeg, open_capture, resolve_source

        src = resolve_source(source, settings.media_dir, settings.allow_cameras)
        if svc.streams >= settings.max_streams:
            raise ApiError(429, f"{svc.streams} streams are already playing (the limit); try again later", "busy",
                           headers={"Retry-After": "10"})
        cap, fps = await anyio.to_thread.run_sync(open_capture, src)
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

    # -- live frames --------------------------------------------------------------------------------------
    @app.websocket(f"{API}/live")
    async def live(ws: WebSocket):
        from ferkit.runtime.video import FaceTracker

        await ws.accept()
        tracker = FaceTracker(analyzer.classes, alpha=0.5)
        step = 0
        live_analyzer = svc.live_analyzer

        def analyse(data: bytes) -> dict:
            nonlocal step
            t0 = time.perf_counter()
            img = decode_upload(data, "frame", settings.max_pixels)
            faces = tracker.update(live_analyzer.analyze(img), step)
            step += 1
            return {"faces": [f.to_dict() for f in faces], "width": int(img.shape[1]), "height": int(img.shape[0]),
                    "ms": _ms(t0)}

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

    return app


def _swagger_ui_assets() -> Path | None:
    """Swagger UI's files from the `swagger-ui-py` package (serve extra), so /docs needs no CDN; else None."""
    import importlib.util

    spec = importlib.util.find_spec("swagger_ui")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        static = Path(folder) / "static"
        if (static / "swagger-ui-bundle.js").is_file() and (static / "swagger-ui.css").is_file():
            return static
    return None


def _probe_video(path: Path, name: str, max_pixels: int) -> None:
    """The upload opens as a video of sensible frame size and yields a first frame, or a 4xx naming it."""
    from ferkit.runtime.video import VideoError, open_video

    try:
        cap, info = open_video(path)
    except VideoError as exc:
        raise ApiError(422, str(exc).replace(str(path), name), "unreadable_video") from None
    try:
        if info.width * info.height > max_pixels:  # before decoding a frame of that size
            raise ApiError(413, f"{name}: {info.width}x{info.height} frames are over the limit of {max_pixels:,} pixels",
                           "too_many_pixels")
        ok, frame = cap.read()
    finally:
        cap.release()
    if not ok or frame is None:
        raise ApiError(422, f"{name}: no frame could be decoded (truncated or corrupt video)", "unreadable_video")


def _job_model(svc: Service, job) -> schemas.VideoJob:
    base = f"{API}/videos/{job.id}"
    result = None
    if job.status == "done" and job.report is not None:
        r = job.report
        result = schemas.VideoResult(frames=r.frames, analysed=r.analysed, fps=round(r.fps, 3), faces=r.faces,
                                     tracks=r.tracks, seconds=round(r.seconds, 2), labels=job.labels,
                                     video_url=f"{base}/files/video", csv_url=f"{base}/files/csv",
                                     plot_url=f"{base}/files/plot")
    return schemas.VideoJob(
        id=job.id, status=job.status, filename=job.filename, progress=job.progress, frames_done=job.frames_done,
        frames_total=job.frames_total, created=job.created, finished=job.finished,
        expires=job.finished + svc.settings.job_ttl_s if job.finished else None, error=job.error,
        warnings=job.warnings, result=result, url=base)

