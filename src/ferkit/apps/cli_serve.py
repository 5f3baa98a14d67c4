"""`ferkit serve`: the web page and JSON API (FastAPI + uvicorn), on 127.0.0.1 unless told otherwise."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from ferkit.apps.errors import user_errors


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@user_errors
def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on. 127.0.0.1 keeps it on this machine; "
                                                     "0.0.0.0 opens it to the network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", min=0, max=65535, help="TCP port.")] = 8000,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="ONNX model file (its .json card beside it) "
                                                                        "or a shipped name; default: fer2013-7.")] = None,
    detector: Annotated[str, typer.Option("--detector", "-d", help="auto, centerface or haar.")] = "auto",
    max_upload_mb: Annotated[float, typer.Option("--max-upload-mb", min=0.001, help="Largest image upload / live frame.")] = 20.0,
    max_video_mb: Annotated[float, typer.Option("--max-video-mb", min=0.001, help="Largest video upload.")] = 200.0,
    max_pixels: Annotated[int, typer.Option("--max-pixels", min=1, help="Largest decoded image in pixels "
                                                                         "(decompression-bomb guard).")] = 40_000_000,
    max_video_frames: Annotated[int, typer.Option("--max-video-frames", min=1, help="Frames of an uploaded video "
                                                                                    "that are processed.")] = 18_000,
    workers: Annotated[int, typer.Option("--workers", min=1, max=64, help="Video jobs processed at once "
                                                                          "(more wait in a bounded queue).")] = 1,
    max_queued_jobs: Annotated[int, typer.Option("--max-jobs", min=1, help="Video jobs queued or running at "
                                                                           "once; more are refused (429).")] = 8,
    inference_threads: Annotated[Optional[int], typer.Option(
        "--inference-threads", min=1, max=64, show_default="the CPU cores, at most 4",
        help="Images/frames analysed at once (one shared model, one onnxruntime thread each).")] = None,
    job_ttl: Annotated[float, typer.Option("--job-ttl", min=1, help="Seconds a finished video job's files are kept.")] = 3600.0,
    media_dir: Annotated[Optional[Path], typer.Option("--media-dir", help="Folder of videos that /api/v1/stream may "
                                                                          "play; without it only cameras stream.")] = None,
    no_cameras: Annotated[bool, typer.Option("--no-cameras", help="Refuse /api/v1/stream of server cameras.")] = False,
    max_connections: Annotated[int, typer.Option("--max-connections", min=1, help="Open connections at once; "
                                                                                   "more get 503 at once.")] = 100,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn log level.")] = "info",
) -> None:
    """Serve the web page (photo, live camera, video) and the JSON API at http://HOST:PORT (API docs at /docs)."""
    try:
        import uvicorn  # noqa: F401

        from ferkit.apps.web import Settings, create_app
    except ImportError as exc:
        raise ValueError(f"the web server needs its extra dependencies ({exc.name} is missing): "
                         "pip install 'ferkit[serve]'") from None

    # OpenCV's own decoder limit, for formats Pillow cannot size from the header (read at the first decode).
    os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(max_pixels))
    settings = Settings(host=host, port=port, model=model, detector=detector, max_upload_mb=max_upload_mb,
                        max_video_mb=max_video_mb, max_pixels=max_pixels, max_video_frames=max_video_frames,
                        workers=workers, max_queued_jobs=max_queued_jobs, job_ttl_s=job_ttl, media_dir=media_dir,
                        allow_cameras=not no_cameras)
    if inference_threads:
        settings.inference_threads = inference_threads
    if not _is_loopback(host):
        typer.secho(f"warning: listening on {host}: anyone who can reach this machine can use the server "
                    "(there is no authentication)", err=True, fg=typer.colors.YELLOW)
    app = create_app(settings)
    import uvicorn

    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"ferkit serve: model {app.state.service.analyzer.model.name}, detector "
               f"{app.state.service.analyzer.detector.name}; open http://{shown}:{port}/ (API docs: /docs)")
    uvicorn.run(app, host=host, port=port, log_level=log_level, ws_max_size=int(max_upload_mb * 1024 * 1024) + 1024,
                timeout_graceful_shutdown=5, timeout_keep_alive=15, server_header=False,
                limit_concurrency=max_connections)


def register(app: typer.Typer) -> None:
    app.command()(serve)
