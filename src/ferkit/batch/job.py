"""The work on one source, the same in a local worker process and in a Ray actor.

`Worker(settings)` loads the model once; `Worker.run(task)` analyses one image or streams one video
frame by frame, writes its part files and then its status (`store.Store`), and yields small events
(plain tuples) for progress:

    ("frames", read, announced)   video frames read since the last event / frames a video announces
    ("done", status)              the status row just written (a dict), plus the worker's "pid" and "peak_rss_mb"
"""

from __future__ import annotations

import dataclasses
import os
import resource
import sys
import time
import traceback
from collections.abc import Iterator

import numpy as np

from ferkit.batch.settings import Settings
from ferkit.batch.sources import source_key
from ferkit.batch.store import BOX, Store, faces_schema
from ferkit.errors import FerkitError, VideoError

from ferkit.runtime.tracking import FaceTracker, Track

PROGRESS_EVERY = 25  # video frames between progress events


class Abandoned(BaseException):
    """The job this worker serves is gone (its parent process was killed): stop without writing more."""


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def tracker_state(tracker: FaceTracker) -> dict:
    tracks = [{k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in dataclasses.asdict(t).items()}
              for t in tracker.tracks.values()]
    return {"next": tracker._next, "tracks": tracks}


def restore_tracker(tracker: FaceTracker, state: dict) -> None:
    tracker._next = int(state["next"])
    tracker.tracks = {}
    for t in state["tracks"]:
        track = Track(**{k: (np.asarray(v, dtype=np.float64) if isinstance(v, list) else v) for k, v in t.items()})
        tracker.tracks[track.id] = track


class Rows:
    """Columns of face rows being gathered for one part file."""

    def __init__(self, settings: Settings, source: str):
        self.settings, self.source = settings, source
        self.schema = faces_schema(settings.classes)
        self.cols: dict[str, list] = {name: [] for name in self.schema.names}

    def __len__(self) -> int:
        return len(self.cols["source"])

    def add(self, frame: int, time_s: float | None, track_ids: list, faces: list) -> None:
        s, c = self.settings, self.cols
        for i, (f, track) in enumerate(zip(faces, track_ids)):
            row = {"source": self.source, "frame": frame, "time": time_s, "track": track, "face": i,
                   **{name: float(v) for name, v in zip(BOX, f.box)}, "score": float(f.score), "label": f.label,
                   **{cls: float(f.probabilities[cls]) for cls in s.classes},
                   "model": s.model_name, "card_sha256": s.card_sha256}
            for name, value in row.items():
                c[name].append(value)


def reason(exc: BaseException) -> str:
    """One line for the status table."""
    if isinstance(exc, OSError) and not isinstance(exc, FerkitError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class Worker:
    """Holds the analysers (built once per process) and runs tasks: {"path", "kind", "results"}."""

    def __init__(self, settings: Settings, threads: int | None = None):
        import cv2

        self.settings, self.threads = settings, threads
        self.wanted = lambda: True  # a local worker checks that its parent still lives, before every frame
        if threads:
            cv2.setNumThreads(threads)
        self._analyzers: dict[bool, object] = {}
        self.analyzer(live=False)  # a bad model or detector fails here, before any source

    def analyzer(self, live: bool):
        """Photos: the card's TTA and the photo detection size; video frames: at most flip, frame size."""
        if live not in self._analyzers:
            from ferkit.runtime.model import FacialExpressionModel
            from ferkit.runtime.pipeline import Analyzer

            s = self.settings
            model = FacialExpressionModel(s.model, tta=s.tta, live=live, threads=self.threads)
            self._analyzers[live] = Analyzer(model, s.detector, min_score=s.min_score, max_side=s.detect_size,
                                             threads=self.threads, live=live)
        return self._analyzers[live]

    def run(self, task: dict) -> Iterator[tuple]:
        store, path, kind = Store(task["results"]), task["path"], task["kind"]
        key = source_key(path)
        t0 = time.perf_counter()
        status = {"source": path, "kind": kind, "status": "done", "reason": None, "faces": 0, "frames": 0}
        try:
            if kind == "video":
                status.update((yield from self._video(store, key, path)))
            else:
                status.update(self._image(store, key, path))
        except (FerkitError, OSError) as exc:
            status.update(status="failed", reason=reason(exc))
        except Exception as exc:  # noqa: BLE001 -- one source's bug must not stop the others; it is named as one
            where = traceback.extract_tb(exc.__traceback__)[-1]
            status.update(status="failed", reason=f"internal error {type(exc).__name__}: {reason(exc)} (at {where.filename}:"
                                                  f"{where.lineno}; this is a bug in ferkit, please report it)")
        if status["status"] == "failed":
            status.update(faces=0, frames=0)
            store.drop_parts(key)
        status["seconds"] = status.pop("earlier_seconds", 0.0) + (time.perf_counter() - t0)
        store.write_status(key, status)
        yield ("done", {**status, "peak_rss_mb": peak_rss_mb(), "pid": os.getpid()})

    # -- one image ------------------------------------------------------------------------------------
    def _image(self, store: Store, key: str, path: str) -> dict:
        from ferkit.images import read_image

        faces = self.analyzer(live=False).analyze(read_image(path))
        rows = Rows(self.settings, path)
        rows.add(0, None, [None] * len(faces), faces)
        store.write_part(key, 0, rows.cols, rows.schema)
        return {"faces": len(faces), "frames": 1}

    # -- one video, frame by frame --------------------------------------------------------------------
    def _video(self, store: Store, key: str, path: str):
        from ferkit.runtime.video import open_video

        s = self.settings
        analyzer = self.analyzer(live=True)
        cap, info = open_video(path)
        try:
            yield ("frames", 0, info.frame_count)
            tracker = FaceTracker(s.classes, max_age=max(3, int(10 // s.frame_step(info.fps)) + 2))
            resume = store.resume_point(key)
            n = analysed = faces = 0
            seconds, chunk = 0.0, 0
            if resume is not None:
                if resume.get("final"):
                    return {"faces": resume["faces"], "frames": resume["analysed"], "reason": resume.get("reason"),
                            "earlier_seconds": resume["seconds"]}
                restore_tracker(tracker, resume["tracker"])
                n, analysed, faces = resume["next_frame"], resume["analysed"], resume["faces"]
                seconds, chunk = resume["seconds"], resume["chunk"] + 1
                for _ in range(n):  # decode-and-skip: exact, where seeking by frame number is not for every codec
                    if not cap.grab():
                        raise VideoError(f"{path}: the file now has fewer frames than when its first parts were written")
                yield ("frames", n, 0)
            t_start = time.perf_counter()
            rows, unreported = Rows(s, path), 0

            def commit(final: bool, reason: str | None = None) -> None:
                meta = {"source": path, "chunk": chunk, "next_frame": n, "analysed": analysed, "faces": faces,
                        "seconds": seconds + time.perf_counter() - t_start, "tracker": tracker_state(tracker),
                        "final": final, "reason": reason}
                store.write_part(key, chunk, rows.cols, rows.schema, meta)

            while True:
                if not self.wanted():
                    raise Abandoned
                if not cap.grab():
                    break
                if s.sampled(n, info.fps):
                    ok, frame = cap.retrieve()
                    if not ok or frame is None:
                        break
                    found = analyzer.analyze(frame)
                    raw = [dataclasses.replace(f) for f in found]  # the frame's own boxes and probabilities
                    tracker.update(found, analysed)
                    rows.add(n, n / info.fps, [f.track_id for f in found], raw)
                    faces += len(found)
                    analysed += 1
                n += 1
                unreported += 1
                if unreported >= PROGRESS_EVERY:
                    yield ("frames", unreported, 0)
                    unreported = 0
                if n % s.chunk == 0:
                    commit(final=False)
                    rows, chunk = Rows(s, path), chunk + 1
            if unreported:
                yield ("frames", unreported, 0)
            if n == 0:
                raise VideoError(f"{path}: no frame could be decoded (empty or corrupt video)")
            reason = None
            if info.frame_count and n < info.frame_count - 2 and n < 0.97 * info.frame_count:
                reason = (f"ended early: read {n} of the {info.frame_count} frames the file announces "
                          "(truncated or corrupt); the rows cover the frames read")
            commit(final=True, reason=reason)
            return {"faces": faces, "frames": analysed, "reason": reason, "earlier_seconds": seconds}
        finally:
            cap.release()
