"""Video jobs: a bounded worker pool runs `ferkit.runtime.process_video` on uploads; files expire.

Each job's decoding and analysis run in a child process of its own (spawned, with its own Analyzer):
an upload is untrusted input to FFmpeg's demuxers and decoders, and a crash or runaway there ends that
job, not the server. Cancelling a job ends its process.

Each job lives in its own folder under the work dir: the upload (deleted when processing ends) and the
outputs (annotated MP4, CSV, emotions plot), deleted with the job after `job_ttl_s`, on DELETE, or on
shutdown.
"""

from __future__ import annotations

import csv
import logging
import multiprocessing
import re
import signal
import shutil
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ferkit.apps.web.errors import ApiError

log = logging.getLogger("ferkit.web")


@dataclass
class Job:
    id: str
    filename: str
    dir: Path
    source: Path
    created: float = field(default_factory=time.time)
    status: str = "queued"
    frames_done: int = 0
    frames_total: int = 0
    finished: float | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    report: object | None = None  # ferkit.runtime.video.VideoReport
    labels: dict[str, int] = field(default_factory=dict)
    cancel: threading.Event = field(default_factory=threading.Event)
    pid: int | None = None  # the job's worker process, once started

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


class JobManager:
    def __init__(self, analyzer_args: dict, work_dir: Path, workers: int, max_jobs: int, ttl_s: float,
                 max_frames: int):
        self.analyzer_args = analyzer_args  # ferkit.runtime.Analyzer(**analyzer_args) in each job's process
        self.root = Path(work_dir)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_jobs, self.ttl_s, self.max_frames = max_jobs, ttl_s, max_frames
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

    def new_job(self, filename: str, suffix: str) -> Job:
        jid = uuid.uuid4().hex
        d = self.root / jid
        d.mkdir(parents=True)
        stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(filename).stem)[:60].strip("_") or "upload"  # names the outputs
        return Job(jid, filename, d, d / f"{stem}{suffix}")

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
        if not job.status == "running":  # a running job removes its folder when it stops
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

    def _run(self, job: Job) -> None:
        if job.cancel.is_set():
            job.status, job.finished = "cancelled", time.time()
            shutil.rmtree(job.dir, ignore_errors=True)
            return
        job.status = "running"
        try:
            report = self._in_child_process(job)
            if report is not None:
                job.report = report
                job.warnings = list(report.warnings)
                if report.frames >= self.max_frames and job.frames_total > report.frames:
                    job.warnings.append(f"only the first {self.max_frames} of {job.frames_total} frames were "
                                        "processed (the server's --max-video-frames)")
                job.labels = _label_counts(report.csv)
                job.frames_total = job.frames_total or report.frames
                job.status = "done"
        except Exception as exc:  # never let a job take the worker down
            log.exception("video job %s failed", job.id)
            job.status, job.error = "failed", f"processing failed ({type(exc).__name__}: {exc})"
        finally:
            job.finished = time.time()
            job.source.unlink(missing_ok=True)
            if job.status == "cancelled" or job.cancel.is_set():
                shutil.rmtree(job.dir, ignore_errors=True)

    def _in_child_process(self, job: Job):
        """Run the job in a spawned process, relaying its progress; the report, or None (failed/cancelled)."""
        ctx = multiprocessing.get_context("spawn")
        receiver, sender = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_video_process, name=f"ferkit-video-{job.id[:8]}", daemon=True,
                           args=(self.analyzer_args, str(job.source), str(job.dir / "out"), self.max_frames, sender))
        proc.start()
        sender.close()  # the child holds the only writer: EOF on the pipe means it has gone
        job.pid = proc.pid
        result = None
        try:
            while result is None:
                if job.cancel.is_set():
                    proc.terminate()
                    job.status = "cancelled"
                    return None
                if not receiver.poll(0.2):
                    continue
                try:
                    msg = receiver.recv()
                except EOFError:
                    break
                if msg[0] == "progress":
                    job.frames_done, job.frames_total = msg[1], msg[2]
                else:
                    result = msg
        finally:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join()
            receiver.close()
        if result is None:  # the process died without a word: a decoder crash, the OOM killer, a kill
            code = proc.exitcode
            how = f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
            job.status, job.error = "failed", f"processing this video stopped the worker process ({how})"
            log.warning("video job %s: worker process ended with %s", job.id, how)
            return None
        if result[0] == "done":
            return result[1]
        job.status, job.error = "failed", result[1].replace(str(job.source), job.filename)
        return None


def _video_process(analyzer_args: dict, source: str, out: str, max_frames: int, conn) -> None:
    """A video job's child process: analyse the file, report progress and the outcome through `conn`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C on the server stops jobs through the server
    from ferkit.runtime.pipeline import Analyzer
    from ferkit.runtime.video import process_video

    try:
        report = process_video(source, out, analyzer=Analyzer(**analyzer_args), max_frames=max_frames,
                               progress=lambda done, total: conn.send(("progress", done, total)))
        conn.send(("done", report))
    except ValueError as exc:  # VideoError and friends: the file's fault, said plainly
        conn.send(("failed", str(exc)))
    except Exception as exc:
        conn.send(("failed", f"processing failed ({type(exc).__name__}: {exc})"))
    finally:
        conn.close()


def _label_counts(path: Path) -> dict[str, int]:
    with open(path, newline="") as fh:
        return dict(Counter(row["label"] for row in csv.DictReader(fh)))
