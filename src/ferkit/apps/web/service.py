"""The one service object behind every route: the analyzers, the inference limiter, video jobs, the work folder.

Routes get it by dependency (`Depends(get_service)`), from `app.state.service`, so there is no global
state and a test can build as many apps as it likes.

One model session serves photos and frames alike; frames get their own detector run at the (smaller)
frame detection size, and a second model session only when the live TTA differs from the card's.
"""

from __future__ import annotations

import base64
import shutil
import time
from pathlib import Path

import anyio
import cv2
import numpy as np
from starlette.requests import HTTPConnection

from ferkit.apps.web.jobs import JobManager
from ferkit.apps.web.media import decode_upload
from ferkit.apps.web.settings import Settings
from ferkit.apps.web.uploads import Upload
from ferkit.apps.web.workdir import create_work_dir

ANNOTATED_MAX_SIDE = 1600  # annotated images are returned at most this large


def ms_since(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 2)


def data_url(bgr: np.ndarray) -> str:
    h, w = bgr.shape[:2]
    if max(h, w) > ANNOTATED_MAX_SIDE:
        s = ANNOTATED_MAX_SIDE / max(h, w)
        bgr = cv2.resize(bgr, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 88])
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode()


class Service:
    """State shared by the routes: the analyzers, the inference limiter, jobs, streams, the work folder."""

    def __init__(self, settings: Settings):
        from ferkit.preprocessing import live_tta
        from ferkit.runtime.model import FacialExpressionModel
        from ferkit.runtime.pipeline import Analyzer

        self.settings = settings
        model = None if settings.model is None else str(settings.model)
        common = {"detector": settings.detector, "min_score": settings.min_score, "threads": settings.model_threads}
        photo_model = FacialExpressionModel(model, threads=settings.model_threads, max_batch=settings.max_batch)
        self.analyzer = Analyzer(photo_model, max_side=settings.detect_size, **common)  # photos: the card's TTA
        tta = live_tta(photo_model.tta)
        live_model = photo_model if tta == photo_model.tta else \
            FacialExpressionModel(model, threads=settings.model_threads, tta=tta, max_batch=settings.max_batch)
        # frames (browser webcam, MJPEG streams): capped TTA, detection at the frame size
        same_size = settings.frame_detect_size == settings.detect_size
        self.live_analyzer = Analyzer(live_model, **{**common, "detector": self.analyzer.detector}) if same_size else \
            Analyzer(live_model, max_side=settings.frame_detect_size, **common)
        self.limiter = anyio.CapacityLimiter(settings.inference_threads)
        self._own_work_dir = settings.work_dir is None
        self.work_dir = create_work_dir() if self._own_work_dir else Path(settings.work_dir)
        self.spool_dir = self.work_dir / "uploads"
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        job_args = {"model": model, "max_side": settings.frame_detect_size, "live": True, **common}
        self.jobs = JobManager(job_args, self.work_dir / "jobs", settings.workers, settings.max_queued_jobs,
                               settings.job_ttl_s, settings.max_video_frames, settings.max_pixels)
        self.streams = 0
        self.started = time.time()

    # inference, in a worker thread
    def predict(self, upload: Upload, annotate: bool) -> dict:
        t0 = time.perf_counter()
        img = decode_upload(upload.read(), upload.name, self.settings.max_pixels)
        t1 = time.perf_counter()
        faces = self.analyzer.analyze(img)
        out = {
            "model": self.analyzer.model.name, "detector": self.analyzer.detector.name,
            "width": int(img.shape[1]), "height": int(img.shape[0]), "classes": list(self.analyzer.classes),
            "faces": [f.to_dict() for f in faces],
            "timings_ms": {"decode": round((t1 - t0) * 1000, 2), "analyze": ms_since(t1)},
        }
        if annotate:
            from ferkit.runtime.draw import draw_results

            out["annotated_image"] = data_url(draw_results(img, faces, copy=False))
        return out

    async def run(self, fn, *args):
        """fn(*args) in a worker thread, at most `inference_threads` at once (first come, first served)."""
        return await anyio.to_thread.run_sync(fn, *args, limiter=self.limiter)

    def close(self) -> None:
        self.jobs.shutdown()
        if self._own_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)


def get_service(conn: HTTPConnection) -> Service:
    """FastAPI dependency: the app's Service (HTTP routes and the WebSocket alike)."""
    return conn.app.state.service
