"""One batch job: expand SOURCES, skip what RESULTS already holds, run the rest on a backend, and count.

The backend (a local process pool, or actors on a Ray cluster) yields the events of `job.Worker.run`;
this module turns them into progress bars and a `Summary`. Either backend writes the same files.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ferkit.batch.settings import DEFAULT_CHUNK, resolve
from ferkit.batch.sources import Source, expand_sources
from ferkit.batch.store import Store
from ferkit.errors import UsageError, require_extra


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


@dataclass
class Summary:
    results: Path
    sources: int = 0  # named by SOURCES
    skipped: int = 0  # already done in RESULTS
    done: int = 0
    failed: int = 0
    faces: int = 0
    frames: int = 0  # analysed this run (images count one)
    images: int = 0
    video_frames: int = 0  # analysed video frames
    seconds: float = 0.0
    backend: str = "local"
    workers: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    peak_rss_mb: dict[int, float] = field(default_factory=dict)  # per worker process id

    def line(self) -> str:
        parts = [f"{self.done} done"] + ([f"{self.failed} failed"] if self.failed else []) + \
                ([f"{self.skipped} already done before"] if self.skipped else [])
        rate = f" in {self.seconds:.1f} s" if self.seconds else ""
        return (f"{self.sources} source(s): {', '.join(parts)}; {self.faces} face(s) in {self.frames} frame(s)"
                f"{rate} on {self.workers} {self.backend} worker(s) -> {self.results}")


def _order(sources: list[Source]) -> list[Source]:
    """Videos first, longest files first (the longest jobs start early), then images as named."""
    def size(s: Source) -> int:
        try:
            return os.path.getsize(s.path)
        except OSError:
            return 0

    videos = sorted((s for s in sources if s.kind == "video"), key=lambda s: -size(s))
    return videos + [s for s in sources if s.kind != "video"]


def _bars(enabled: bool, sources: int, videos: int):
    from tqdm import tqdm

    common = {"file": sys.stderr, "dynamic_ncols": True, "disable": not enabled}
    src_bar = tqdm(total=sources, unit="source", desc="sources", position=0, **common)
    frame_bar = tqdm(total=0, unit="frame", desc="video frames", position=1, **common) if videos else None
    return src_bar, frame_bar


def run_job(sources_args: list[str], results: str | Path, *, model: str | None = None, detector: str = "auto",
            min_score: float = 0.5, detect_size: int | None = None, tta: str | None = None, every: int = 1,
            fps: float | None = None, chunk: int = DEFAULT_CHUNK, workers: int | None = None, ray: bool = False,
            ray_address: str | None = None, overwrite: bool = False, progress: bool | None = None) -> Summary:
    """Analyse every source into RESULTS (see `ferkit.batch`); returns what happened."""
    require_extra("analyze", "ferkit analyze", "pyarrow")
    if workers is not None and workers < 1:
        raise UsageError(f"--workers must be 1 or more, not {workers}")
    from ferkit.modelcard import RUNTIME_TTA

    if tta is not None and tta not in RUNTIME_TTA:
        raise UsageError(f"--tta {tta!r}: choose {' or '.join(RUNTIME_TTA)} (or leave it out for the model card's)")
    settings = resolve(model, detector=detector, min_score=min_score, detect_size=detect_size, tta=tta,
                       every=every, fps=fps, chunk=chunk)
    results = Path(results).absolute()
    sources, warnings = expand_sources([str(a) for a in sources_args], exclude=results)
    if not sources:
        raise UsageError("SOURCES name no image or video files" + (f" ({warnings[0]})" if warnings else ""))
    store = Store(results)
    store.check(settings, overwrite=overwrite)
    done_before = set() if overwrite else store.done_keys()
    todo = _order([s for s in sources if s.key not in done_before])
    summary = Summary(results, sources=len(sources), skipped=len(sources) - len(todo), warnings=warnings)
    if not todo:
        return summary
    tasks = [{"index": i, "path": s.path, "kind": s.kind, "results": str(results)} for i, s in enumerate(todo)]
    if ray or ray_address:
        from ferkit.batch.ray_backend import RayPool

        pool = RayPool(settings, workers, ray_address)  # connects (or fails) before RESULTS is touched
        summary.backend = "Ray"
    else:
        from ferkit.batch.local import LocalPool

        n = min(workers or usable_cores(), len(tasks))
        pool = LocalPool(settings, n, threads=max(1, usable_cores() // n))
    store.open(settings, overwrite=overwrite)
    summary.workers = pool.workers
    enabled = sys.stderr.isatty() if progress is None else progress
    src_bar, frame_bar = _bars(enabled, len(tasks), sum(s.kind == "video" for s in todo))
    t0 = time.perf_counter()
    try:
        for index, event in pool.run(tasks):
            kind = event[0]
            if kind == "frames" and frame_bar is not None:
                if event[2]:
                    frame_bar.total += event[2]
                    frame_bar.refresh()
                frame_bar.update(event[1])
            elif kind == "crashed":
                source = todo[index]
                status = {"source": source.path, "kind": source.kind, "status": "failed", "reason": event[1],
                          "faces": 0, "frames": 0, "seconds": 0.0}
                store.drop_parts(source.key)
                store.write_status(source.key, status)
                _count(summary, status)
                src_bar.update(1)
            elif kind == "done":
                _count(summary, event[1])
                src_bar.update(1)
                src_bar.set_postfix(faces=summary.faces, failed=summary.failed, refresh=False)
    finally:
        src_bar.close()
        if frame_bar is not None:
            frame_bar.close()
    summary.seconds = time.perf_counter() - t0
    return summary


def _count(summary: Summary, status: dict) -> None:
    if status["status"] == "done":
        summary.done += 1
        summary.faces += int(status["faces"])
        summary.frames += int(status["frames"])
        if status["kind"] == "video":
            summary.video_frames += int(status["frames"])
        else:
            summary.images += 1
        if status.get("reason"):
            summary.warnings.append(f"{status['source']}: {status['reason']}")
    else:
        summary.failed += 1
        summary.failures.append((status["source"], status["reason"] or "failed"))
    if status.get("peak_rss_mb") is not None:
        pid = int(status["pid"])
        summary.peak_rss_mb[pid] = max(summary.peak_rss_mb.get(pid, 0.0), float(status["peak_rss_mb"]))
