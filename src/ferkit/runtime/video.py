"""Video: read any file OpenCV can, track faces across frames with smoothed probabilities
(`ferkit.runtime.tracking`), and write a browser-playable annotated video, a per-frame CSV and an
emotions-over-time plot.

Writing: OpenCV's wheels cannot encode H.264 (no libx264 for licence reasons) and their VP9 runs at
~90 ms per 640x480 frame. We pipe frames to the ffmpeg binary that `imageio-ffmpeg` ships (libx264,
~5 ms per frame, `+faststart` so browsers start playing at once). Without imageio-ffmpeg the writer
falls back to OpenCV's VP8 WebM, which browsers play as well. The source's sound track, if it has
one, is then muxed into the annotated video by the same ffmpeg (AAC in MP4, Opus in WebM).

Outputs are written under temporary names beside their targets and renamed into place only when the
whole job has succeeded: a failed or interrupted job leaves no partial file behind.
"""

from __future__ import annotations

import csv
import math
import os
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ferkit.errors import UsageError, VideoError  # noqa: F401 (re-exported)
from ferkit.fileio import atomic_write_bytes, input_file

os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # ffmpeg's own complaints: we raise clearer errors

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from ferkit.runtime.draw import draw_results
from ferkit.runtime.pipeline import Analyzer, FaceResult
from ferkit.runtime.tracking import FaceTracker

VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ogv", ".3gp", ".gif", ".y4m"}


# -- reading ------------------------------------------------------------------------------------------
@dataclass
class VideoInfo:
    path: str
    fps: float
    width: int
    height: int
    frame_count: int  # as the container claims; 0 when unknown


def open_video(path: str | Path, max_pixels: int | None = None) -> tuple[cv2.VideoCapture, VideoInfo]:
    """Open a video file for reading; VideoError naming it if it cannot be read or if its frames have more
    than `max_pixels` pixels (default `ferkit.images.MAX_PIXELS`), said before any frame is decoded."""
    from ferkit.images import MAX_PIXELS

    p = Path(path)
    input_file(p, "a video", VideoError)
    cap = cv2.VideoCapture(str(p))
    if not cap.isOpened():
        cap.release()
        raise VideoError(f"{p}: {why_no_frames(p, 'not a readable video (unknown format, or truncated before its index)')}")
    fps = cap.get(cv2.CAP_PROP_FPS)
    fps = fps if fps and math.isfinite(fps) and 0 < fps < 1000 else 25.0
    info = VideoInfo(str(p), fps, int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                     max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT))))
    limit = MAX_PIXELS if max_pixels is None else max_pixels
    if info.width * info.height > limit:
        cap.release()
        raise VideoError(f"{p}: {info.width}x{info.height} frames are over the limit of {limit:,} pixels")
    return cap, info


def probe_streams(path: str | Path) -> tuple[bool, bool] | None:
    """(has a video stream, has an audio stream) as ffmpeg sees the file (cover art is not video);
    None without imageio-ffmpeg or when ffmpeg cannot tell."""
    exe = ffmpeg_exe()
    if exe is None:
        return None
    try:
        probe = subprocess.run([exe, "-hide_banner", "-i", str(path)], capture_output=True, timeout=60)
    except (subprocess.TimeoutExpired, OSError):
        return None
    streams = [line for line in probe.stderr.splitlines() if b"Stream #" in line]
    if not streams:
        return None
    video = any(b"Video:" in line and b"attached pic" not in line for line in streams)
    return video, any(b"Audio:" in line for line in streams)


def why_no_frames(path: str | Path, default: str) -> str:
    """What to say about a file that gave no frame: 'no video stream' when ffmpeg sees only sound."""
    streams = probe_streams(path)
    if streams is not None and not streams[0]:
        return "no video stream (only sound)" if streams[1] else "no video stream"
    return default


def frames(cap: cv2.VideoCapture) -> Iterator[np.ndarray]:
    while True:
        ok, frame = cap.read()
        if not ok or frame is None:
            return
        yield frame


# -- writing ------------------------------------------------------------------------------------------
def ffmpeg_exe() -> str | None:
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:
        return None


class VideoWriter:
    """Write BGR frames to .mp4 (H.264) or .webm (VP9 with ffmpeg, else VP8 through OpenCV)."""

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int], name: str | Path | None = None):
        """`name`: the file to name in errors (when `path` is a temporary name for it)."""
        self.path = Path(path)
        self.name = str(name or path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.size = size
        w, h = size
        exe = ffmpeg_exe()
        suffix = self.path.suffix.lower()
        if suffix not in (".mp4", ".webm"):
            raise VideoError(f"{self.name}: write .mp4 (H.264) or .webm (VP9/VP8)")
        if suffix == ".mp4" and exe is None:
            raise VideoError(f"{self.name}: H.264 needs the imageio-ffmpeg package (pip install imageio-ffmpeg); "
                             "or write .webm")
        self._proc = self._cv = None
        if exe is not None:
            codec = (["-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p",
                      "-movflags", "+faststart"] if suffix == ".mp4" else
                     ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "0", "-crf", "34",
                      "-pix_fmt", "yuv420p"])
            cmd = [exe, "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{w}x{h}",
                   "-r", f"{fps:.6g}", "-i", "-", "-an", "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", *codec, str(self.path)]
            self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
            self.codec = "h264" if suffix == ".mp4" else "vp9"
        else:
            self._cv = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"VP80"), fps, size)
            if not self._cv.isOpened():
                raise VideoError(f"{self.name}: OpenCV cannot write VP8 WebM here; install imageio-ffmpeg")
            self.codec = "vp8"

    def write(self, frame: np.ndarray) -> None:
        if frame.shape[1] != self.size[0] or frame.shape[0] != self.size[1]:
            frame = cv2.resize(frame, self.size)
        if self._proc is not None:
            try:
                self._proc.stdin.write(np.ascontiguousarray(frame).tobytes())
            except BrokenPipeError:
                raise VideoError(f"{self.name}: ffmpeg stopped: {_last_line(self._proc.stderr.read())}") from None
        else:
            self._cv.write(frame)

    def close(self) -> None:
        if self._proc is not None:
            self._proc.stdin.close()
            err = self._proc.stderr.read()
            if self._proc.wait() != 0:
                raise VideoError(f"{self.name}: ffmpeg failed: {_last_line(err)}")
            self._proc = None
        elif self._cv is not None:
            self._cv.release()
            self._cv = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _last_line(stderr: bytes | str) -> str:
    """ffmpeg's reason: the last non-empty line it wrote (its error), or a plain word when it said nothing."""
    text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no message from ffmpeg"


def has_audio(path: str | Path) -> bool:
    """Whether ffmpeg sees an audio stream in the file (False without imageio-ffmpeg)."""
    streams = probe_streams(path)
    return bool(streams and streams[1])


def copy_audio(src: str | Path, video: str | Path, seconds: float) -> str | None:
    """Mux the source's first audio stream into the annotated `video` (video stream copied, audio
    re-encoded for the container, cut to the video's `seconds`). Returns a warning if it could not."""
    exe, video = ffmpeg_exe(), Path(video)
    if exe is None or not has_audio(src):
        return None
    tmp = partial_path(video)
    audio = (["-c:a", "aac", "-b:a", "128k", "-movflags", "+faststart"] if video.suffix.lower() == ".mp4" else
             ["-c:a", "libopus", "-b:a", "96k"])
    cmd = [exe, "-y", "-loglevel", "error", "-i", str(video), "-t", f"{seconds:.3f}", "-i", str(src),
           "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", *audio, str(tmp)]
    try:
        run = subprocess.run(cmd, capture_output=True, timeout=600)
        err = run.stderr.decode(errors="replace").strip().splitlines()
        ok = run.returncode == 0 and tmp.exists() and tmp.stat().st_size > 0
    except subprocess.TimeoutExpired:
        ok, err = False, ["timed out"]
    if not ok:
        tmp.unlink(missing_ok=True)
        return f"{src}: its sound could not be copied ({err[-1] if err else 'ffmpeg failed'}); the annotated video is silent"
    os.replace(tmp, video)
    return None


# -- the whole job ------------------------------------------------------------------------------------
@dataclass
class VideoReport:
    source: str
    video: Path
    csv: Path
    plot: Path
    fps: float
    frames: int  # frames read and written
    analysed: int  # frames run through detection + classification
    expected_frames: int  # as the container claimed (0: unknown)
    faces: int  # face rows in the CSV
    tracks: int
    seconds: float  # wall time of the job
    warnings: list[str] = field(default_factory=list)
    ended_early: bool = False  # the file gave fewer frames than it announces (truncated or corrupt)

    def to_dict(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}


def output_paths(src: str | Path, out: str | Path | None) -> tuple[Path, Path, Path]:
    """(video, csv, plot) for `ferkit video IN [-o OUT]`: OUT may be a .mp4/.webm file or a folder."""
    src = Path(src)
    if out is not None and Path(out).suffix.lower() in VIDEO_SUFFIXES - {".mp4", ".webm"}:
        raise VideoError(f"{out}: annotated videos are written as .mp4 (H.264) or .webm (VP9), which browsers play")
    if out is not None and Path(out).suffix.lower() in (".mp4", ".webm"):
        video = Path(out)
        base = video.with_suffix("")
    else:
        folder = Path(out) if out is not None else Path(f"{src.stem}_ferkit")
        video = folder / f"{src.stem}.annotated{'.mp4' if ffmpeg_exe() else '.webm'}"  # H.264 needs ferkit[video]
        base = folder / src.stem
    return video, base.with_name(base.name + ".csv"), base.with_name(base.name + ".emotions.png")


def partial_path(path: Path) -> Path:
    """A hidden temporary name beside `path`, with its suffix (ffmpeg picks the container from it)."""
    return path.with_name(f".{path.stem}.partial-{secrets.token_hex(4)}{path.suffix}")


def check_frame_limit(max_frames: int | None, option: str = "--max-frames") -> None:
    if max_frames is not None and (isinstance(max_frames, bool) or int(max_frames) < 1):
        raise UsageError(f"{option} must be 1 or more, not {max_frames} (leave it out for no limit)")


def process_video(src: str | Path, out: str | Path | None = None, *, analyzer: Analyzer | None = None,
                  every: int = 1, alpha: float = 0.4, max_frames: int | None = None, audio: bool = True,
                  progress: Callable[[int, int], None] | None = None, max_pixels: int | None = None) -> VideoReport:
    """Annotate a video file. Returns what was written and any warnings (e.g. the file ended early).

    every: analyse every Nth frame (the others are written with the latest boxes and labels).
    alpha: weight of the newest frame in each face's moving average of probabilities (1 = no smoothing).
    max_frames: stop after this many frames (None: the whole file).
    audio: copy the source's sound track into the annotated video.
    progress: called as progress(frames_done, frames_expected) after each frame.
    max_pixels: refuse frames larger than this (default `ferkit.images.MAX_PIXELS`).
    Nothing is left behind when the job fails: the outputs appear, complete, only at the end.
    """
    from ferkit.runtime.charts import timeline_chart
    from ferkit.runtime.pipeline import get_analyzer

    if every < 1:
        raise UsageError(f"--every must be 1 or more, not {every}")
    if not 0 < alpha <= 1:
        raise UsageError(f"smoothing weight must be in (0, 1], not {alpha}")
    check_frame_limit(max_frames)
    video_path, csv_path, plot_path = output_paths(src, out)
    cap, info = open_video(src, max_pixels)
    analyzer = analyzer or get_analyzer(live=True)
    classes = analyzer.classes
    tracker = FaceTracker(classes, alpha=alpha, max_age=max(3, 10 // every + 2))
    times: dict[int, list[float]] = {}
    probs: dict[int, list[np.ndarray]] = {}
    t0 = time.perf_counter()
    n = analysed = rows = 0
    current: list[FaceResult] = []
    warnings: list[str] = []
    made = _make_folders({video_path.parent, csv_path.parent, plot_path.parent})
    tmp_video, tmp_csv = partial_path(video_path), partial_path(csv_path)
    writer = None
    try:
        try:
            with open(tmp_csv, "w", newline="") as fh:
                out_csv = csv.writer(fh)
                out_csv.writerow(["frame", "time_s", "face", "x1", "y1", "x2", "y2", "score", "label", "confidence",
                                  "raw_label", *classes])
                for frame in frames(cap):
                    if writer is None:
                        writer = VideoWriter(tmp_video, info.fps, (frame.shape[1], frame.shape[0]), video_path)
                    if n % every == 0:
                        current = tracker.update(analyzer.analyze(frame), analysed)
                        analysed += 1
                        t = n / info.fps
                        for f in current:
                            out_csv.writerow([n, f"{t:.3f}", f.track_id, *(f"{v:.1f}" for v in f.box), f"{f.score:.3f}",
                                              f.label, f"{f.confidence:.4f}", f.raw_label or f.label,
                                              *(f"{f.probabilities[c]:.4f}" for c in classes)])
                            times.setdefault(f.track_id, []).append(t)
                            probs.setdefault(f.track_id, []).append([f.probabilities[c] for c in classes])
                            rows += 1
                    writer.write(draw_results(frame, current, show_id=True))
                    n += 1
                    if progress:
                        progress(n, info.frame_count)
                    if max_frames and n >= max_frames:
                        break
        finally:
            cap.release()
            if writer is not None:
                writer.close()
        if n == 0:
            raise VideoError(f"{src}: {why_no_frames(src, 'no frame could be decoded (empty or corrupt video)')}")
        ended_early = bool(not max_frames and info.frame_count and n < info.frame_count - 2
                           and n < 0.97 * info.frame_count)
        if ended_early:
            warnings.append(f"{src}: ended early: read {n} of the {info.frame_count} frames the file announces "
                            "(truncated or corrupt); the outputs cover the frames read")
        if audio and (problem := copy_audio(src, tmp_video, n / info.fps)):
            warnings.append(problem)
        plot = timeline_chart(times, {k: np.asarray(v) for k, v in probs.items()}, classes, None,
                              title=f"Emotions over time — {Path(src).name}")
        try:
            os.replace(tmp_video, video_path)
            os.replace(tmp_csv, csv_path)
        except OSError as exc:
            raise VideoError(f"cannot write {video_path.parent}: {exc.strerror or exc}") from None
        atomic_write_bytes(plot_path, plot)
    except BaseException:
        for tmp in (tmp_video, tmp_csv):
            tmp.unlink(missing_ok=True)
        for folder in sorted(made, key=lambda d: len(d.parts), reverse=True):
            try:
                folder.rmdir()  # only folders this job made, and only when empty
            except OSError:
                pass
        raise
    return VideoReport(str(src), video_path, csv_path, plot_path, info.fps, n, analysed, info.frame_count, rows,
                       len(times), time.perf_counter() - t0, warnings, ended_early)


def _make_folders(folders: set[Path]) -> list[Path]:
    """Create the output folders; returns the ones that did not exist (removed again if the job fails)."""
    from ferkit.fileio import ensure_dir

    made = []
    for folder in folders:
        missing = [d for d in (folder, *folder.parents) if not d.exists()]
        ensure_dir(folder)
        made.extend(missing)
    return made
