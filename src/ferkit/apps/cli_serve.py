"""`ferkit serve`: the web page and JSON API (FastAPI + uvicorn), on 127.0.0.1 unless told otherwise.

The options fill `ferkit.apps.web.settings.Settings` (their defaults are its defaults). The port is bound
before the model loads, so a busy port is one line and exit 2, and the address is printed only once
the server listens on it.
"""

from __future__ import annotations

import errno
import os
import socket
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Optional

import typer

from ferkit.apps.errors import user_errors
from ferkit.errors import MissingExtraError, UsageError


def setting(name: str):
    """A Settings field's default (ferkit.apps.web.settings is light: no web stack is imported)."""
    from ferkit.apps.web.settings import Settings

    f = next(f for f in fields(Settings) if f.name == name)
    return f.default


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket bound to host:port, or UsageError saying in one line why not."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UsageError(f"--host {host}: not an address of this machine ({exc.strerror})") from None
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # rebind after a restart; never over a live server
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise UsageError(f"port {port} is in use on {host} (another server?): stop it, or choose another port "
                             "with --port") from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise UsageError(f"cannot listen on {host}:{port}: permission denied (ports below 1024 need "
                             "privileges; choose another with --port)") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise UsageError(f"--host {host}: not an address of this machine") from None
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def _log_config(level: str) -> dict:
    """uvicorn's logging, with ferkit's web messages (client disconnects, cut-off slow clients) alongside."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["ferkit"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return config


@user_errors
def serve(
    host: Annotated[str, typer.Option(
        "--host", help="Address to listen on. 127.0.0.1 keeps it on this machine; 0.0.0.0 opens it to the network.",
    )] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", min=0, max=65535, help="TCP port.")] = 8000,
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", help="ONNX model file (its .json card beside it) or a shipped name or tier (fast, accurate, robust); default: fer2013-7.",
    )] = None,
    detector: Annotated[str, typer.Option(
        "--detector", "-d", help="Face detector: auto (YuNet; else CenterFace if installed; else Haar), yunet, "
                                 "centerface, haar.",
    )] = "auto",
    detect_size: Annotated[int, typer.Option(
        "--detect-size", help="Photos (/predict): detection runs on the image scaled to this long side (0: full size).",
    )] = setting("detect_size"),
    frame_detect_size: Annotated[int, typer.Option(
        "--frame-detect-size", help="The same for frames (live camera, streams, video jobs).",
    )] = setting("frame_detect_size"),
    max_upload_mb: Annotated[float, typer.Option(
        "--max-upload-mb", min=0.001, help="Largest image upload / live frame.")] = setting("max_upload_mb"),
    max_video_mb: Annotated[float, typer.Option(
        "--max-video-mb", min=0.001, help="Largest video upload.")] = setting("max_video_mb"),
    max_pixels: Annotated[int, typer.Option(
        "--max-pixels", min=1, help="Largest image or video frame in pixels, checked before decoding "
                                    "(decompression-bomb guard).",
    )] = setting("max_pixels"),
    max_video_frames: Annotated[int, typer.Option(
        "--max-video-frames", min=1, help="Frames of an uploaded video that are processed.",
    )] = setting("max_video_frames"),
    workers: Annotated[int, typer.Option(
        "--workers", min=1, max=64, help="Video jobs processed at once (more wait in a bounded queue).",
    )] = setting("workers"),
    max_queued_jobs: Annotated[int, typer.Option(
        "--max-jobs", min=1, help="Video jobs queued or running at once; more are refused (429).",
    )] = setting("max_queued_jobs"),
    inference_threads: Annotated[Optional[int], typer.Option(
        "--inference-threads", min=1, max=64, show_default="the CPU cores, at most 4",
        help="Images/frames analysed at once (one shared model, one onnxruntime thread each).",
    )] = None,
    job_ttl: Annotated[float, typer.Option(
        "--job-ttl", min=1, help="Seconds a finished video job's files are kept.")] = setting("job_ttl_s"),
    media_dir: Annotated[Optional[Path], typer.Option(
        "--media-dir", help="Folder of videos that /api/v1/stream may play; without it no files stream.",
    )] = None,
    cameras: Annotated[bool, typer.Option(
        "--cameras", help="Let clients open this machine's cameras through /api/v1/stream?source=0 (off by default).",
    )] = False,
    no_cameras: Annotated[bool, typer.Option("--no-cameras", hidden=True, help="Cameras are off by default.")] = False,
    allow_origin: Annotated[Optional[list[str]], typer.Option(
        "--allow-origin", help="A web origin (https://host:port) besides this server's own whose pages may use the "
                               "live WebSocket and streams; repeatable.",
    )] = None,
    max_connections: Annotated[int, typer.Option(
        "--max-connections", min=1, help="Open connections at once; when full, stalled ones make room, else 503.",
    )] = setting("max_connections"),
    client_timeout: Annotated[float, typer.Option(
        "--client-timeout", min=0.1, help="Seconds a client has to send its request headers, and before its upload "
                                          "must keep up the minimum rate.",
    )] = setting("client_timeout_s"),
    min_upload_rate: Annotated[float, typer.Option(
        "--min-upload-rate", min=0.01, help="Slowest upload accepted, in KiB/s (slower ones are cut off with 408).",
    )] = setting("min_upload_kbps"),
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn log level.")] = "info",
) -> None:
    """Serve the web page (photo, live camera, video) and the JSON API at http://HOST:PORT (API docs at /docs)."""
    try:
        import uvicorn

        from ferkit.apps.web import create_app
        from ferkit.apps.web.protocol import guarded_protocol
        from ferkit.apps.web.settings import MB, Settings, is_loopback
    except ImportError as exc:
        raise MissingExtraError("serve", "the web server", exc.name or "") from None

    # OpenCV's own decoder limit, for formats Pillow cannot size from the header (read at the first decode).
    os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(max_pixels))
    settings = Settings(host=host, port=port, model=model, detector=detector, detect_size=detect_size,
                        frame_detect_size=frame_detect_size, max_upload_mb=max_upload_mb, max_video_mb=max_video_mb,
                        max_pixels=max_pixels, max_video_frames=max_video_frames, workers=workers,
                        max_queued_jobs=max_queued_jobs, job_ttl_s=job_ttl, media_dir=media_dir,
                        allow_cameras=cameras, allowed_origins=tuple(allow_origin or ()),
                        max_connections=max_connections, client_timeout_s=client_timeout,
                        min_upload_kbps=min_upload_rate)
    if inference_threads:
        settings.inference_threads = inference_threads
    settings.validate()
    sock = bind_socket(host, port)  # before the model loads: a busy port is said at once
    try:
        if not is_loopback(host):
            exposed = "; its cameras are open to them (--cameras)" if cameras else ""
            typer.secho(f"warning: listening on {host}: anyone who can reach this machine can use the server "
                        f"(there is no authentication){exposed}", err=True, fg=typer.colors.YELLOW)
        app = create_app(settings)
        bound = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        svc = app.state.service
        ready = (f"ferkit serve: model {svc.analyzer.model.name}, detector {svc.analyzer.detector.name}; "
                 f"open http://{shown}:{bound}/ (API docs: /docs)")
        config = uvicorn.Config(
            app, log_level=log_level, log_config=_log_config(log_level), http=guarded_protocol(
                settings.client_timeout_s, settings.min_upload_rate, settings.max_connections),
            ws_max_size=int(max_upload_mb * MB) + 1024, timeout_graceful_shutdown=5,
            timeout_keep_alive=int(settings.keep_alive_s), server_header=False,
            limit_concurrency=settings.max_connections + 1, h11_max_incomplete_event_size=16 * 1024)
        try:
            _announcing_server(config, ready).run(sockets=[sock])
        except KeyboardInterrupt:  # uvicorn re-raises the Ctrl+C it shut down on (as uvicorn.run does: done)
            pass
    finally:
        sock.close()


def _announcing_server(config, ready: str):
    """uvicorn's server, printing `ready` once it listens (not before: a bind error would follow the URL)."""
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets)
            if self.started and not self.should_exit:
                typer.echo(ready)

    return Server(config)


def register(app: typer.Typer) -> None:
    app.command()(serve)
