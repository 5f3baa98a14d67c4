"""MJPEG (multipart/x-mixed-replace) of an annotated camera or video file, for an <img src>.

Sources are a camera index (only with `ferkit serve --cameras`), or a video file *inside the configured
media folder*: the server never opens a camera or a path it was not told it may serve.
"""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import cv2

from ferkit.apps.web.errors import ApiError

BOUNDARY = "ferkitframe"


def resolve_source(source: str, media_dir: Path | None, allow_cameras: bool) -> str | int:
    """'0' -> camera 0; 'clip.mp4' -> media_dir/clip.mp4 (only inside media_dir). ApiError otherwise."""
    from ferkit.runtime.video import VIDEO_SUFFIXES

    source = source.strip()
    if not source:
        raise ApiError(400, "source is empty: give a camera index (0, 1, …) or a video file name from the media folder")
    if source.isascii() and source.isdigit() and len(source) <= 3:  # not '²', which isdigit() too
        if not allow_cameras:
            raise ApiError(403, "camera sources are off on this server: it opens its own cameras for clients only "
                                "when started with `ferkit serve --cameras`", "cameras_disabled")
        return int(source)
    if media_dir is None:
        raise ApiError(403, "video-file sources are disabled: start the server with --media-dir DIR to serve the "
                            "videos in DIR", "files_disabled")
    if "\x00" in source:
        raise ApiError(400, "source contains a NUL character")
    path = (media_dir / source).resolve()
    if not path.is_relative_to(media_dir):
        raise ApiError(403, f"{source!r} is outside the media folder", "outside_media_dir")
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise ApiError(404, f"no video {source!r} in the media folder (video names end in "
                            f"{', '.join(sorted(VIDEO_SUFFIXES))})", "no_such_source")
    if not path.is_file():
        raise ApiError(404, f"no video {source!r} in the media folder", "no_such_source")
    return str(path)


def open_capture(src: str | int, max_pixels: int):
    from ferkit.errors import VideoError
    from ferkit.runtime.webcam import open_source

    try:
        cap = open_source(src, max_pixels)
    except VideoError as exc:
        msg = str(exc)
        if isinstance(src, str):
            msg = msg.replace(src, Path(src).name)
            raise ApiError(422, msg, "unreadable_video") from None
        raise ApiError(404, f"cannot open camera {src} on the server: no camera there, or no permission to use it",
                       "no_camera") from None
    fps = cap.get(cv2.CAP_PROP_FPS)
    return cap, (fps if isinstance(src, str) and fps and 0 < fps < 1000 else 0.0)


def _part(jpeg: bytes) -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
            + jpeg + b"\r\n")


async def mjpeg(cap, pace_fps: float, analyzer, limiter, on_close, max_frames: int | None = None,
                quality: int = 80):
    """Yield multipart parts of annotated frames; paced to the file's frame rate; releases the capture."""
    from ferkit.runtime.tracking import live_frames

    frames = live_frames(cap, analyzer, max_frames=max_frames)

    def next_jpeg():
        item = next(frames, None)
        if item is None:
            return None
        ok, buf = cv2.imencode(".jpg", item[0], [cv2.IMWRITE_JPEG_QUALITY, quality])
        return buf.tobytes() if ok else b""

    interval = 1.0 / pace_fps if pace_fps else 0.0
    try:
        due = time.monotonic()
        while True:
            jpeg = await anyio.to_thread.run_sync(next_jpeg, limiter=limiter)
            if jpeg is None:
                break
            if jpeg:
                yield _part(jpeg)
            if interval:
                due += interval
                delay = due - time.monotonic()
                if delay > 0:
                    await anyio.sleep(delay)
                else:
                    due = time.monotonic()
    finally:
        cap.release()  # the reading thread has returned: anyio waits for it before delivering a cancel
        on_close()
