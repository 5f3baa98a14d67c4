"""Video jobs: a bounded worker pool runs `ferkit.runtime.process_video` on uploads; files expire.

Each job's decoding and analysis run in a worker process of its own (`ferkit.apps.web.worker`, with its
own Analyzer, talking JSON): an upload is untrusted input to FFmpeg's demuxers and decoders, and a
crash or runaway there ends that job, not the server. Cancelling a job ends its process.

Each job lives in its own folder under the work dir: the upload (deleted when processing ends) and the
outputs (annotated MP4, CSV, emotions plot), deleted with the job after `job_ttl_s`, on DELETE, or on
shutdown. What a client is told (errors, warnings) names the upload, never a path on the server.
"""

from __future__ import annotations

import csv
import logging
import re
import shutil
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ferkit.apps.web.errors import ApiError
from ferkit.apps.web.worker import exit_description, run_worker

log = logging.getLogger("ferkit.web")


@dataclass
class Job:
    id: str
    filename: str
    dir: Path
    source: Path  # the stored upload, once its format is known
    created: float = field(default_factory=time.time)
    status: str = "queued"
    frames_done: int = 0
    frames_total: int = 0
    finished: float | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    report: dict | None = None  # the worker's: frames, analysed, expected_frames, faces, tracks, fps, seconds
    labels: dict[str, int] = field(default_factory=dict)
    cancel: threading.Event = field(default_factory=threading.Event)

    @property
    def active(self) -> bool:
        return self.status in ("queued", "running")

    @property
    def progress(self) -> float | None:
        if self.status == "done":
            return 1.0
        if self.frames_total <= 0:
            return 0.0 if self.status == "queued" else None
        return min(1.0, self.frames_done / self.frames_total)

    def store_as(self, suffix: str) -> Path:
        """The stored upload's path for its format: a safe name from the client's, with this suffix."""
        stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(self.filename).stem)[:60].strip("_") or "upload"
        self.source = self.dir / f"{stem}{suffix}"
        return self.source


class JobManager:
    def __init__(self, analyzer_args: dict, work_dir: Path, workers: int, max_jobs: int, ttl_s: float,
                 max_frames: int, max_pixels: int | None = None):
        self.analyzer_args = analyzer_args  # ferkit.runtime.Analyzer(**analyzer_args) in each job's process
        self.root = Path(work_dir)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_jobs, self.ttl_s, self.max_frames, self.max_pixels = max_jobs, ttl_s, max_frames, max_pixels
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ferkit-video")
        self.jobs: dict[str, Job] = {}
        self.lock = threading.Lock()
        self.closed = False

    # -- bookkeeping ------------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        with self.lock:
            c = Counter(j.status for j in self.jobs.values())
        return {"queued": c["queued"], "running": c["running"], "finished": sum(c.values()) - c["queued"] - c["running"]}

    def check_capacity(self) -> None:
        with self.lock:
            active = sum(j.active for j in self.jobs.values())
        if self.closed:
            raise ApiError(503, "the server is shutting down", "shutting_down")
        if active >= self.max_jobs:
            raise ApiError(429, f"{active} video jobs are queued or running (the limit); try again later", "busy",
                           headers={"Retry-After": "10"})

    def new_job(self, filename: str, suffix: str = ".upload") -> Job:
        jid = uuid.uuid4().hex
        d = self.root / jid
        d.mkdir(parents=True)
        job = Job(jid, filename, d, d)
        job.store_as(suffix)
        return job

    def get(self, jid: str) -> Job:
        with self.lock:
            job = self.jobs.get(jid)
        if job is None:
            raise ApiError(404, f"no video job {jid} (unknown, deleted, or expired)", "unknown_job")
        return job

    def submit(self, job: Job) -> None:
        with self.lock:
            active = sum(j.active for j in self.jobs.values())
            if self.closed or active >= self.max_jobs:
                shutil.rmtree(job.dir, ignore_errors=True)
                raise ApiError(429, "too many video jobs are queued or running; try again later", "busy",
                               headers={"Retry-After": "10"})
            self.jobs[job.id] = job
        self.pool.submit(self._run, job)

    def delete(self, jid: str) -> None:
        job = self.get(jid)
        job.cancel.set()
        with self.lock:
            self.jobs.pop(jid, None)
        if job.status != "running":  # a running job removes its folder when it stops
            shutil.rmtree(job.dir, ignore_errors=True)

    def sweep(self, now: float | None = None) -> int:
        """Delete finished jobs older than the TTL (and their files). Returns how many."""
        now = now or time.time()
        with self.lock:
            old = [j for j in self.jobs.values() if not j.active and j.finished and now - j.finished > self.ttl_s]
            for j in old:
                del self.jobs[j.id]
        for j in old:
            shutil.rmtree(j.dir, ignore_errors=True)
        return len(old)

    def shutdown(self) -> None:
        self.closed = True
        with self.lock:
            jobs = list(self.jobs.values())
        for j in jobs:
            j.cancel.set()
        self.pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self.root, ignore_errors=True)

    # -- the work -----------------------------------------------------------------------------------------
    def outputs(self, job: Job) -> dict[str, Path]:
        from ferkit.runtime.video import output_paths

        video, csv_path, plot = output_paths(job.source, job.dir / "out")
        return {"video": video, "csv": csv_path, "plot": plot}

    def public(self, text: str, job: Job) -> str:
        """A message for the client: the upload's name for its stored copy, and no other path of the server."""
        text = text.replace(str(job.source), job.filename)
        for root in {str(self.root), str(self.root.resolve())}:
            text = re.sub(re.escape(root) + r"[^\s:'\"]*", lambda m: Path(m.group(0)).name, text)
        return text

    def _run(self, job: Job) -> None:
        if job.cancel.is_set():
            job.status, job.finished = "cancelled", time.time()
            shutil.rmtree(job.dir, ignore_errors=True)
            return
        job.status = "running"
        try:
            spec = {"analyzer": self.analyzer_args, "source": str(job.source), "out": str(job.dir / "out"),
                    "max_frames": self.max_frames, "max_pixels": self.max_pixels}

            def progress(done: int, total: int) -> None:
                job.frames_done, job.frames_total = done, total

            result, code = run_worker(spec, progress, job.cancel.is_set, name=f"ferkit-video-{job.id[:8]}")
            if result is None:  # the process died without a word: a decoder crash, the OOM killer, a kill
                how = exit_description(code)
                job.status, job.error = "failed", f"processing this video stopped the worker process ({how})"
                log.warning("video job %s: worker process ended with %s", job.id, how)
            elif "cancelled" in result:
                job.status = "cancelled"
            elif "failed" in result:
                job.status, job.error = "failed", self.public(result["failed"], job)
            else:
                report = job.report = result["done"]
                job.warnings = [self.public(w, job) for w in report["warnings"]]
                job.warnings += self._frame_warnings(job, report)
                job.labels = _label_counts(self.outputs(job)["csv"])
                job.frames_total = job.frames_total or report["frames"]
                job.status = "done"
        except Exception as exc:  # never let a job take the worker thread down
            log.exception("video job %s failed", job.id)
            job.status, job.error = "failed", f"processing failed ({type(exc).__name__})"
        finally:
            job.finished = time.time()
            job.source.unlink(missing_ok=True)
            if job.status == "cancelled" or job.cancel.is_set():
                shutil.rmtree(job.dir, ignore_errors=True)

    def _frame_warnings(self, job: Job, report: dict) -> list[str]:
        """What `ferkit video` says about frames, said here too: the server's frame limit cut the video
        short, or the file ended before the frames it announces."""
        n, expected = report["frames"], report["expected_frames"]
        if n >= self.max_frames:
            if job.frames_total > n:
                return [f"only the first {self.max_frames} of {job.frames_total} frames were processed "
                        "(the server's --max-video-frames)"]
            return []
        if not any("ended early" in w for w in job.warnings) and expected and n < expected - 2 and n < 0.97 * expected:
            return [f"{job.filename}: ended early: read {n} of the {expected} frames the file announces "
                    "(truncated or corrupt); the outputs cover the frames read"]
        return []


def _label_counts(path: Path) -> dict[str, int]:
    with open(path, newline="") as fh:
        return dict(Counter(row["label"] for row in csv.DictReader(fh)))
