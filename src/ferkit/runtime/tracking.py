"""Following faces from frame to frame: box overlap (`box_iou`), a tracker that keeps each face's id and
smooths its probabilities over frames (`FaceTracker`), and the live loop that reads, analyses and
annotates frames (`live_frames`). Used by video files, the webcam window, MJPEG streams and the live
WebSocket alike.

Only numpy and the drawing helpers are imported here (no detector, no model), so the face detectors
can use `box_iou` too.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ferkit.runtime.draw import draw_fps, draw_results

if TYPE_CHECKING:
    from ferkit.runtime.pipeline import Analyzer, FaceResult


def box_iou(a: Sequence[float], b) -> float | np.ndarray:
    """Intersection over union of box `a` (x1, y1, x2, y2) with box `b`, or with each row of an (N, 4) array `b`
    (then an array of N values). Degenerate boxes have area 0; an empty union gives 0."""
    a = np.asarray(a, dtype=np.float64)
    bb = np.asarray(b, dtype=np.float64)
    rows = np.atleast_2d(bb)
    w = np.maximum(0.0, np.minimum(a[2], rows[:, 2]) - np.maximum(a[0], rows[:, 0]))
    h = np.maximum(0.0, np.minimum(a[3], rows[:, 3]) - np.maximum(a[1], rows[:, 1]))
    inter = w * h
    area_a = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
    areas = np.maximum(0.0, rows[:, 2] - rows[:, 0]) * np.maximum(0.0, rows[:, 3] - rows[:, 1])
    union = area_a + areas - inter
    iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return float(iou[0]) if bb.ndim == 1 else iou


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
        """Assign track ids and smoothed probabilities/labels to this step's faces (in place); each face's
        own label before smoothing is kept in `raw_label`."""
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
            f.raw_label = raw_label
        for tid in [k for k, t in self.tracks.items() if step - t.last_seen > self.max_age]:
            del self.tracks[tid]
        return faces


def live_frames(cap, analyzer: Analyzer, every: int = 1,
                max_frames: int | None = None) -> Iterator[tuple[np.ndarray, list[FaceResult], float]]:
    """Yield (annotated frame, faces, frames per second) from an open capture: faces tracked, their labels
    smoothed over frames, the FPS drawn in the corner. Stops when the capture ends or after `max_frames`."""
    tracker = FaceTracker(analyzer.classes, alpha=0.5)
    faces, fps, last, n = [], 0.0, time.perf_counter(), 0
    while max_frames is None or n < max_frames:
        ok, frame = cap.read()
        if not ok or frame is None:
            return
        if n % every == 0:
            faces = tracker.update(analyzer.analyze(frame), n // every)
        now = time.perf_counter()
        fps = 1 / max(now - last, 1e-6) if fps == 0 else 0.9 * fps + 0.1 / max(now - last, 1e-6)
        last = now
        n += 1
        yield draw_fps(draw_results(frame, faces), fps), faces, fps
