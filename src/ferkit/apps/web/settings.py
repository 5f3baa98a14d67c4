"""Settings of the web app: the one declaration of what `ferkit serve` options set, with safe defaults."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from ferkit.errors import UsageError
from ferkit.runtime.defaults import DETECT_SIZE_FRAMES, DETECT_SIZE_PHOTO

MB = 1024 * 1024
KB = 1024


def usable_cores(cap: int) -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        n = os.cpu_count() or 1
    return max(1, min(cap, n))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    model: str | None = None  # .onnx path or shipped name; None: $FERKIT_MODEL or the shipped default
    detector: str = "auto"
    min_score: float = 0.5
    detect_size: int = DETECT_SIZE_PHOTO  # photos (/predict): detection runs on the image scaled to this long side
    frame_detect_size: int = DETECT_SIZE_FRAMES  # frames (live WebSocket, MJPEG streams, video jobs); 0: full size
    # Limits
    max_upload_mb: float = 20.0  # one image (POST /predict, a WebSocket frame)
    max_video_mb: float = 200.0  # one video upload
    max_pixels: int = 40_000_000  # decoded image size (decompression bombs), checked before decoding
    max_video_frames: int = 18_000  # frames of a video job (10 min at 30 fps); the rest is not processed
    # Concurrency
    # Images/frames analysed at once (one shared model), each on one onnxruntime thread: on a small shared CPU
    # that beats one request on several threads (whose spinning thread pool costs 2.5x under contention).
    inference_threads: int = field(default_factory=lambda: usable_cores(4))
    model_threads: int = 1  # onnxruntime intra-op threads per inference
    max_batch: int = 64  # face views one model run takes at most: bounds each inference's memory (a crowd photo)
    workers: int = 1  # video jobs processed at once
    max_queued_jobs: int = 8  # video jobs waiting or running; more get 429
    job_ttl_s: float = 3600.0  # finished jobs and their files are deleted after this long
    max_streams: int = 4  # concurrent MJPEG streams
    # Slow and idle clients
    max_connections: int = 200  # open connections; when full, stalled ones are closed to make room, else 503
    client_timeout_s: float = 10.0  # a request's headers must arrive within this; also the body's grace period
    min_upload_kbps: float = 32.0  # after the grace period a body must arrive at least this fast (KiB/s)
    keep_alive_s: float = 5.0  # an idle keep-alive connection is closed after this
    # What clients may reach
    media_dir: Path | None = None  # video files /stream may play (names relative to it); None: no files
    allow_cameras: bool = False  # /stream?source=0 opens the server's camera 0 (`ferkit serve --cameras`)
    allowed_origins: tuple[str, ...] = ()  # browser origins besides the page's own that may use /live and /stream
    work_dir: Path | None = None  # where uploads and video jobs live; None: a fresh folder in the temp directory

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MB)

    @property
    def max_video_bytes(self) -> int:
        return int(self.max_video_mb * MB)

    @property
    def min_upload_rate(self) -> float:
        """Bytes per second."""
        return self.min_upload_kbps * KB

    def validate(self) -> Settings:
        for name in ("max_upload_mb", "max_video_mb", "max_pixels", "max_video_frames", "inference_threads",
                     "workers", "max_queued_jobs", "job_ttl_s", "max_streams", "model_threads", "max_batch",
                     "max_connections", "client_timeout_s", "min_upload_kbps", "keep_alive_s"):
            if getattr(self, name) <= 0:
                raise UsageError(f"--{name.replace('_', '-')} must be positive, not {getattr(self, name)}")
        for name in ("detect_size", "frame_detect_size"):
            if getattr(self, name) != 0 and getattr(self, name) < 32:
                raise UsageError(f"--{name.replace('_', '-')} must be 0 (the full image) or at least 32 pixels, "
                                 f"not {getattr(self, name)}")
        if self.max_queued_jobs < self.workers:
            self.max_queued_jobs = self.workers
        if self.media_dir is not None:
            self.media_dir = Path(self.media_dir).expanduser().resolve()
            if not self.media_dir.is_dir():
                raise UsageError(f"--media-dir {self.media_dir}: no such folder")
        origins = []
        for o in self.allowed_origins:
            o = o.strip().rstrip("/")
            if not o.startswith(("http://", "https://")) or "/" in o.split("://", 1)[1]:
                raise UsageError(f"--allow-origin {o!r}: give an origin like https://example.org or http://host:8080")
            origins.append(o.lower())
        self.allowed_origins = tuple(origins)
        return self
