"""Settings of the web app: what `ferkit serve` options set, with safe defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

MB = 1024 * 1024


def usable_cores(cap: int) -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        n = os.cpu_count() or 1
    return max(1, min(cap, n))


@dataclass
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    model: str | None = None  # .onnx path or shipped name; None: $FERKIT_MODEL or the shipped default
    detector: str = "auto"
    min_score: float = 0.5
    detect_size: int = 640  # detection runs on images scaled to this long side
    # Limits
    max_upload_mb: float = 20.0  # one image (POST /predict, a WebSocket frame)
    max_video_mb: float = 200.0  # one video upload
    max_pixels: int = 40_000_000  # decoded image size (decompression bombs)
    max_video_frames: int = 18_000  # frames of a video job (10 min at 30 fps); the rest is not processed
    # Concurrency
    # Images/frames analysed at once (one shared model), each on one onnxruntime thread: on a small shared CPU
    # that beats one request on several threads (whose spinning thread pool costs 2.5x under contention).
    inference_threads: int = field(default_factory=lambda: usable_cores(4))
    model_threads: int = 1  # onnxruntime intra-op threads per inference
    workers: int = 1  # video jobs processed at once
    max_queued_jobs: int = 8  # video jobs waiting or running; more get 429
    job_ttl_s: float = 3600.0  # finished jobs and their files are deleted after this long
    max_streams: int = 4  # concurrent MJPEG streams
    # /stream sources
    media_dir: Path | None = None  # video files /stream may play (names relative to it); None: no files
    allow_cameras: bool = True  # /stream?source=0 opens the server's camera 0
    work_dir: Path | None = None  # where video jobs live; None: a fresh temporary folder, removed on shutdown

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MB)

    @property
    def max_video_bytes(self) -> int:
        return int(self.max_video_mb * MB)

    def validate(self) -> Settings:
        for name in ("max_upload_mb", "max_video_mb", "max_pixels", "max_video_frames", "inference_threads",
                     "workers", "max_queued_jobs", "job_ttl_s", "max_streams", "detect_size", "model_threads"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name.replace('_', '-')} must be positive, not {getattr(self, name)}")
        if self.max_queued_jobs < self.workers:
            self.max_queued_jobs = self.workers
        if self.media_dir is not None:
            self.media_dir = Path(self.media_dir).expanduser().resolve()
            if not self.media_dir.is_dir():
                raise ValueError(f"--media-dir {self.media_dir}: no such folder")
        return self
