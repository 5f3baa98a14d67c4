"""Video: read any file OpenCV can, track faces across frames with smoothed probabilities, and write a
browser-playable annotated video, a per-frame CSV and an emotions-over-time plot.

Writing: OpenCV's wheels cannot encode H.264 (no libx264 for licence reasons) and their VP9 runs at
~90 ms per 640x480 frame. We pipe frames to the ffmpeg binary that `imageio-ffmpeg` ships (libx264,
~5 ms per frame, `+faststart` so browsers start playing at once). Without imageio-ffmpeg the writer
falls back to OpenCV's VP8 WebM, which browsers play as well. The source's sound track, if it has
one, is then muxed into the annotated video by the same ffmpeg (AAC in MP4, Opus in WebM).
"""

from __future__ import annotations

import csv
import math
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ferkit.errors import VideoError  # noqa: F401 (re-exported)

os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # ffmpeg's own complaints: we raise clearer errors

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from ferkit.runtime.draw import draw_results
from ferkit.runtime.pipeline import Analyzer, FaceResult

VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ogv", ".3gp", ".gif", ".y4m"}


# -- reading ------------------------------------------------------------------------------------------
@dataclass
class VideoInfo:
    path: str
    fps: float
    width: int
    height: int
    frame_count: int  # as the container claims; 0 when unknown


def open_video(path: str | Path) -> tuple[cv2.VideoCapture, VideoInfo]:
    p = Path(path)
    if p.is_dir():
        raise VideoError(f"{p}: is a directory, not a video")
    if not p.exists():
        raise VideoError(f"{p}: no such file")
    if p.stat().st_size == 0:
        raise VideoError(f"{p}: empty file (0 bytes)")
    cap = cv2.VideoCapture(str(p))
    if not cap.isOpened():
        raise VideoError(f"{p}: not a readable video (unknown format, or truncated before its index)")
    fps = cap.get(cv2.CAP_PROP_FPS)
    fps = fps if fps and math.isfinite(fps) and 0 < fps < 1000 else 25.0
    info = VideoInfo(str(p), fps, int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                     max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT))))
    return cap, info


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

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.size = size
        w, h = size
        exe = ffmpeg_exe()
        suffix = self.path.suffix.lower()
        if suffix not in (".mp4", ".webm"):
            raise VideoError(f"{self.path}: write .mp4 (H.264) or .webm (VP9/VP8)")
        if suffix == ".mp4" and exe is None:
            raise VideoError(f"{self.path}: H.264 needs the imageio-ffmpeg package (pip install imageio-ffmpeg); "
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
                raise VideoError(f"{self.path}: OpenCV cannot write VP8 WebM here; install imageio-ffmpeg")
            self.codec = "vp8"

    def write(self, frame: np.ndarray) -> None:
        if frame.shape[1] != self.size[0] or frame.shape[0] != self.size[1]:
            frame = cv2.resize(frame, self.size)
        if self._proc is not None:
            try:
                self._proc.stdin.write(np.ascontiguousarray(frame).tobytes())
            except BrokenPipeError:
                raise VideoError(f"{self.path}: ffmpeg stopped: {self._proc.stderr.read().decode(errors='replace')}") from None
        else:
            self._cv.write(frame)

    def close(self) -> None:
        if self._proc is not None:
            self._proc.stdin.close()
            err = self._proc.stderr.read().decode(errors="replace")
            if self._proc.wait() != 0:
                raise VideoError(f"{self.path}: ffmpeg failed: {err.strip()[-500:]}")
            self._proc = None
        elif self._cv is not None:
            self._cv.release()
            self._cv = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def has_audio(path: str | Path) -> bool:
    """Whether ffmpeg sees an audio stream in the file (False without imageio-ffmpeg)."""
    exe = ffmpeg_exe()
    if exe is None:
        return False
    try:
        probe = subprocess.run([exe, "-hide_banner", "-i", str(path)], capture_output=True, timeout=60)
    except subprocess.TimeoutExpired:
        return False
    return any(b"Stream #" in line and b"Audio:" in line for line in probe.stderr.splitlines())


def copy_audio(src: str | Path, video: str | Path, seconds: float) -> str | None:
    """Mux the source's first audio stream into the annotated `video` (video stream copied, audio
    re-encoded for the container, cut to the video's `seconds`). Returns a warning if it could not."""
    exe, video = ffmpeg_exe(), Path(video)
    if exe is None or not has_audio(src):
        return None
    tmp = video.with_name(f".{video.stem}.with-audio{video.suffix}")
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


# -- tracking -----------------------------------------------------------------------------------------
def box_iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class Track:
    id: int
    box: np.ndarray
    probs: np.ndarray
    last_seen: int
    hits: int = 1


class FaceTracker:
    """Greedy IoU matching of faces between analysed frames; an exponential moving average of each
    track's probabilities (weight `alpha` on the newest frame) steadies labels that would flicker."""

    def __init__(self, classes, alpha: float = 0.4, iou: float = 0.3, max_age: int = 10):
        self.classes = tuple(classes)
        self.alpha, self.iou, self.max_age = alpha, iou, max_age
        self.tracks: dict[int, Track] = {}
        self._next = 1

    def update(self, faces: list[FaceResult], step: int) -> list[FaceResult]:
        """Assign track ids and smoothed probabilities/labels to this step's faces (in place)."""
        pairs = sorted(((box_iou(t.box, f.box), tid, i) for tid, t in self.tracks.items() for i, f in enumerate(faces)),
                       reverse=True)
        used_t, used_f = set(), set()
        assign: dict[int, int] = {}
        for v, tid, i in pairs:
            if v < self.iou:
                break
            if tid in used_t or i in used_f:
                continue
            used_t.add(tid), used_f.add(i)
            assign[i] = tid
        for i, f in enumerate(faces):
            p = np.array([f.probabilities[c] for c in self.classes], dtype=np.float64)
            raw_label = f.label
            if i in assign:
                t = self.tracks[assign[i]]
                t.probs = self.alpha * p + (1 - self.alpha) * t.probs
                t.box = 0.6 * np.asarray(f.box) + 0.4 * t.box  # a little box smoothing against jitter
                t.last_seen, t.hits = step, t.hits + 1
            else:
                t = Track(self._next, np.asarray(f.box, dtype=np.float64), p, step)
                self.tracks[t.id] = t
                self._next += 1
            f.track_id = t.id
            f.box = tuple(float(v) for v in t.box)
            f.probabilities = {c: float(v) for c, v in zip(self.classes, t.probs)}
            f.label = self.classes[int(np.argmax(t.probs))]
            f.extra["raw_label"] = raw_label
        for tid in [k for k, t in self.tracks.items() if step - t.last_seen > self.max_age]:
            del self.tracks[tid]
        return faces


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

    @property
    def ended_early(self) -> bool:
        return any("ended early" in w for w in self.warnings)

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
        video = folder / f"{src.stem}.annotated.mp4"
        base = folder / src.stem
    return video, base.with_name(base.name + ".csv"), base.with_name(base.name + ".emotions.png")


def process_video(src: str | Path, out: str | Path | None = None, *, analyzer: Analyzer | None = None,
                  every: int = 1, alpha: float = 0.4, max_frames: int | None = None, audio: bool = True,
                  progress: Callable[[int, int], None] | None = None) -> VideoReport:
    """Annotate a video file. Returns what was written and any warnings (e.g. the file ended early).

    every: analyse every Nth frame (the others are written with the latest boxes and labels).
    alpha: weight of the newest frame in each face's moving average of probabilities (1 = no smoothing).
    audio: copy the source's sound track into the annotated video.
    progress: called as progress(frames_done, frames_expected) after each frame.
    """
    from ferkit.runtime.charts import timeline_chart
    from ferkit.runtime.pipeline import get_analyzer

    if every < 1:
        raise VideoError(f"--every must be 1 or more, not {every}")
    if not 0 < alpha <= 1:
        raise VideoError(f"smoothing weight must be in (0, 1], not {alpha}")
    analyzer = analyzer or get_analyzer(live=True)
    cap, info = open_video(src)
    video_path, csv_path, plot_path = output_paths(src, out)
    classes = analyzer.classes
    tracker = FaceTracker(classes, alpha=alpha, max_age=max(3, 10 // every + 2))
    times: dict[int, list[float]] = {}
    probs: dict[int, list[np.ndarray]] = {}
    t0 = time.perf_counter()
    n = analysed = rows = 0
    current: list[FaceResult] = []
    warnings: list[str] = []
    writer = None
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(csv_path, "w", newline="") as fh:
            out_csv = csv.writer(fh)
            out_csv.writerow(["frame", "time_s", "face", "x1", "y1", "x2", "y2", "score", "label", "confidence",
                              "raw_label", *classes])
            for frame in frames(cap):
                if writer is None:
                    writer = VideoWriter(video_path, info.fps, (frame.shape[1], frame.shape[0]))
                if n % every == 0:
                    current = tracker.update(analyzer.analyze(frame), analysed)
                    analysed += 1
                    t = n / info.fps
                    for f in current:
                        out_csv.writerow([n, f"{t:.3f}", f.track_id, *(f"{v:.1f}" for v in f.box), f"{f.score:.3f}",
                                          f.label, f"{f.confidence:.4f}", f.extra.get("raw_label", f.label),
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
        raise VideoError(f"{src}: no frame could be decoded (empty or corrupt video)")
    if not max_frames and info.frame_count and n < info.frame_count - 2 and n < 0.97 * info.frame_count:
        warnings.append(f"{src}: ended early: read {n} of the {info.frame_count} frames the file announces "
                        "(truncated or corrupt); the outputs cover the frames read")
    if audio and (problem := copy_audio(src, video_path, n / info.fps)):
        warnings.append(problem)
    timeline_chart(times, {k: np.asarray(v) for k, v in probs.items()}, classes, plot_path,
                   title=f"Emotions over time — {Path(src).name}")
    return VideoReport(str(src), video_path, csv_path, plot_path, info.fps, n, analysed, info.frame_count, rows,
                       len(times), time.perf_counter() - t0, warnings)
