"""`analyze(image)`: every face in a picture -> box, detection score, label, probabilities.

(The module is `pipeline` so that `ferkit.runtime.analyze` stays the function.)
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ferkit.images import ImageError, decode_image, read_image
from ferkit.runtime.align import Framing, crop_face, framing_for
from ferkit.runtime.defaults import DETECT_SIZE_FRAMES, DETECT_SIZE_PHOTO
from ferkit.runtime.detectors import FaceDetector, get_detector
from ferkit.runtime.model import FacialExpressionModel


@dataclass
class FaceResult:
    """One face: box (x1, y1, x2, y2) in image pixels, detector score, label and class probabilities."""

    box: tuple[float, float, float, float]
    score: float
    label: str
    probabilities: dict[str, float]
    landmarks: list[list[float]] | None = None
    track_id: int | None = None  # set by tracking (ferkit.runtime.tracking)
    raw_label: str | None = None  # set by tracking: this frame's own label, before smoothing over frames

    @property
    def confidence(self) -> float:
        return self.probabilities[self.label]

    def to_dict(self) -> dict[str, Any]:
        d = {
            "box": [round(float(v), 1) for v in self.box],
            "score": round(float(self.score), 4),
            "label": self.label,
            "confidence": round(self.confidence, 4),
            "probabilities": {k: round(float(v), 4) for k, v in self.probabilities.items()},
        }
        if self.landmarks is not None:
            d["landmarks"] = [[round(float(x), 1), round(float(y), 1)] for x, y in self.landmarks]
        if self.track_id is not None:
            d["track_id"] = self.track_id
        return d


def load_image(image: Any, name: str | None = None) -> np.ndarray:
    """A path, encoded bytes, a PIL image or a numpy array (BGR, grey or BGRA) -> 8-bit BGR array."""
    if isinstance(image, (str, Path)):
        return read_image(image)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return decode_image(bytes(image), name or "<bytes>")
    if isinstance(image, np.ndarray):
        if image.size == 0 or image.ndim not in (2, 3):
            raise ImageError(f"{name or '<array>'}: not an image array (shape {image.shape})")
        return image
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL.Image without importing Pillow here
        import cv2

        return cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2BGR)
    raise ImageError(f"{name or type(image).__name__}: cannot use a {type(image).__name__} as an image")


def reading_order(dets: list) -> list:
    """Sort detections into rows (centres within half a face height) read top to bottom, left to right."""
    if len(dets) < 2:
        return list(dets)
    height = float(np.median([d.box[3] - d.box[1] for d in dets]))
    rows: list[list] = []
    for d in sorted(dets, key=lambda d: (d.box[1] + d.box[3]) / 2):
        cy = (d.box[1] + d.box[3]) / 2
        if rows and cy - (rows[-1][0].box[1] + rows[-1][0].box[3]) / 2 < height / 2:
            rows[-1].append(d)
        else:
            rows.append([d])
    return [d for row in rows for d in sorted(row, key=lambda d: d.box[0])]


class Analyzer:
    """Detector + framing + expression model, ready to run on images or video frames (thread-safe)."""

    def __init__(self, model: FacialExpressionModel | str | Path | None = None,
                 detector: FaceDetector | str = "auto", framing: Framing | None = None,
                 min_score: float = 0.5, max_side: int | None = None, threads: int | None = None,
                 live: bool = False):
        """`live`: frames of a webcam, video or stream -- the model runs the TTA
        `ferkit.preprocessing.live_tta` picks (unless a FacialExpressionModel is passed in).
        `max_side`: the long side detection runs at (default `DETECT_SIZE_FRAMES` when live, else
        `DETECT_SIZE_PHOTO`; 0 for the full image)."""
        self.model = model if isinstance(model, FacialExpressionModel) else \
            FacialExpressionModel(model, threads=threads, live=live)
        if isinstance(detector, str):
            if max_side is None:
                max_side = DETECT_SIZE_FRAMES if live else DETECT_SIZE_PHOTO
            detector = get_detector(detector, max_side=max_side, threshold=min_score, threads=threads)
        self.detector = detector
        self.framing = framing or framing_for(detector.name)
        self.min_score = min_score

    @property
    def classes(self) -> tuple[str, ...]:
        return self.model.classes

    def analyze(self, image: Any) -> list[FaceResult]:
        """All faces in the image, in reading order (rows top to bottom, left to right in a row)."""
        return self.analyze_many([image])[0]

    def analyze_many(self, images: list[Any]) -> list[list[FaceResult]]:
        """`analyze` for several images (consecutive video frames, a group of photos): each is detected
        on its own, then the faces of all of them go through the expression model together (at most the
        model's `max_batch` views a network run), so a frame's result is the same as `analyze` gives it."""
        from ferkit.preprocessing import to_gray_uint8

        found, crops = [], []
        for image in images:
            bgr = load_image(image)
            dets = reading_order([d for d in self.detector.detect(bgr) if d.score >= self.min_score])
            if dets:
                gray = to_gray_uint8(bgr)
                crops.extend(crop_face(gray, d, self.framing, self.model.input_size) for d in dets)
            found.append(dets)
        probs = self.model.predict_proba(np.stack(crops)) if crops else None
        out, i = [], 0
        for dets in found:
            out.append([self._result(d, p) for d, p in zip(dets, probs[i:i + len(dets)])] if dets else [])
            i += len(dets)
        return out

    def _result(self, d, p: np.ndarray) -> FaceResult:
        return FaceResult(box=d.box, score=d.score, label=self.classes[int(np.argmax(p))],
                          probabilities={c: float(v) for c, v in zip(self.classes, p)},
                          landmarks=None if d.landmarks is None else d.landmarks.tolist())

    __call__ = analyze


_lock = threading.Lock()


@functools.lru_cache(maxsize=4)
def _cached_analyzer(model: str | None, detector: str, live: bool) -> Analyzer:
    return Analyzer(model, detector, live=live)


def get_analyzer(model: str | Path | None = None, detector: str = "auto", live: bool = False) -> Analyzer:
    """A shared Analyzer per (model, detector, live): models load once per process."""
    with _lock:
        return _cached_analyzer(None if model is None else str(model), detector, live)


def analyze(image: Any, *, model: str | Path | None = None, detector: str = "auto") -> list[FaceResult]:
    """Every face in `image` (path, bytes, PIL image or BGR numpy array) -> a list of `FaceResult`.

    >>> import ferkit
    >>> [f.to_dict() for f in ferkit.analyze("photo.jpg")]
    [{'box': [181.5, 58.2, 269.9, 177.8], 'score': 0.93, 'label': 'happy', 'confidence': 0.91, ...}]
    """
    return get_analyzer(model, detector).analyze(image)
