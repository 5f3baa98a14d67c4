"""A corruption and framing suite in the spirit of ImageNet-C, on 48x48 faces (numpy + OpenCV).

Each corruption changes the uint8 faces (N, 48, 48) deterministically (noise is seeded), and the model is
scored on the changed faces: accuracy, balanced accuracy and their drop from the clean faces. Framing
corruptions (a tighter or looser crop, a shift, a rotation) re-frame the face from a reflect-padded copy,
so a looser crop or a shift shows border content instead of black; the others change the pixels:
brightness, contrast, gamma, blur, noise, JPEG, low resolution.
"""

from __future__ import annotations

import sys
import zlib
from dataclasses import dataclass

import cv2
import numpy as np

from ferkit.errors import UsageError
from ferkit.evaluation.metrics import align_classes, compute_metrics
from ferkit.evaluation.predictor import Predictor
from ferkit.evaluation.score import predict_tta

BORDER = cv2.BORDER_REFLECT  # the padded copy framing corruptions draw on (training's augmentation reflects too)


@dataclass(frozen=True)
class Corruption:
    name: str
    severity: float
    label: str  # how the severity reads in a table


def _c(name: str, label: str, *levels: float) -> list[Corruption]:
    return [Corruption(name, float(v), label.format(v=v)) for v in levels]


SUITE: tuple[Corruption, ...] = tuple(
    _c("crop", "side x{v:g}", 0.8, 0.9, 1.1, 1.25)  # < 1 tighter, > 1 looser
    + _c("shift", "{v:.0%}", 0.05, 0.10)  # the frame moved right and down
    + _c("rotate", "{v:g} deg", 5, 10, 15)
    + _c("brightness", "{v:+g}", -40, 40)  # added to every pixel (0-255)
    + _c("contrast", "x{v:g}", 0.5)  # the face's deviations from its mean scaled
    + _c("gamma", "{v:g}", 0.6, 1.6)
    + _c("blur", "sigma {v:g}", 0.75, 1.5)  # Gaussian, in pixels
    + _c("noise", "sigma {v:g}", 10, 20)  # Gaussian, in grey levels (0-255)
    + _c("jpeg", "quality {v:g}", 20, 40)
    + _c("lowres", "{v:g} px", 24)  # down to v x v, back up to 48
)
NAMES = tuple(dict.fromkeys(c.name for c in SUITE))


# ---------------------------------------------------------------------------- the corruptions
def _warp(faces: np.ndarray, matrix_for) -> np.ndarray:
    _, h, w = faces.shape
    out = np.empty_like(faces)
    for i, face in enumerate(faces):
        out[i] = cv2.warpAffine(face, matrix_for(w, h), (w, h), flags=cv2.INTER_LINEAR, borderMode=BORDER)
    return out


def _crop(faces: np.ndarray, scale: float) -> np.ndarray:
    """The centred square of side `scale` x the face's, resampled to the face's size (> 1: looser)."""
    def m(w, h):
        cx, cy = (w - 1) / 2, (h - 1) / 2  # output pixel u samples the input at cx + scale * (u - cx)
        return np.float32([[1 / scale, 0, cx - cx / scale], [0, 1 / scale, cy - cy / scale]])
    return _warp(faces, m)


def _shift(faces: np.ndarray, frac: float) -> np.ndarray:
    """The frame moved right and down by `frac` of the side each (the face moves up and left in it)."""
    return _warp(faces, lambda w, h: np.float32([[1, 0, -frac * w], [0, 1, -frac * h]]))


def _rotate(faces: np.ndarray, degrees: float) -> np.ndarray:
    return _warp(faces, lambda w, h: cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), degrees, 1.0))


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _per_face(faces: np.ndarray, fn) -> np.ndarray:
    return np.stack([fn(f) for f in faces]) if len(faces) else faces.copy()


def _jpeg(face: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", face, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG")
    return cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)


def _seed(seed: int, c: Corruption) -> int:
    return (int(seed) * 1_000_003 + zlib.crc32(f"{c.name}:{c.severity:g}".encode())) % 2**32


def corrupt(faces: np.ndarray, c: Corruption | None, seed: int = 0) -> np.ndarray:
    """uint8 faces (N, H, W) under corruption `c` (None: clean, the faces themselves); deterministic for a seed."""
    faces = np.ascontiguousarray(faces, dtype=np.uint8)
    if faces.ndim != 3:
        raise ValueError(f"faces must be (N, H, W) uint8, got shape {faces.shape}")
    if c is None:
        return faces
    v, x = c.severity, faces.astype(np.float32)
    if c.name == "crop":
        return _crop(faces, v)
    if c.name == "shift":
        return _shift(faces, v)
    if c.name == "rotate":
        return _rotate(faces, v)
    if c.name == "brightness":
        return _to_uint8(x + v)
    if c.name == "contrast":
        mean = x.mean(axis=(1, 2), keepdims=True)
        return _to_uint8(mean + (x - mean) * v)
    if c.name == "gamma":
        return _to_uint8(255.0 * (x / 255.0) ** v)
    if c.name == "blur":
        return _per_face(faces, lambda f: cv2.GaussianBlur(f, (0, 0), sigmaX=v, borderType=BORDER))
    if c.name == "noise":
        rng = np.random.default_rng(_seed(seed, c))
        return _to_uint8(x + rng.normal(0.0, v, faces.shape))
    if c.name == "jpeg":
        return _per_face(faces, lambda f: _jpeg(f, int(v)))
    if c.name == "lowres":
        s = int(v)
        h, w = faces.shape[1:]
        return _per_face(faces, lambda f: cv2.resize(cv2.resize(f, (s, s), interpolation=cv2.INTER_AREA), (w, h),
                                                     interpolation=cv2.INTER_LINEAR))
    raise ValueError(f"unknown corruption {c.name!r}")


def select(names: list[str] | None) -> tuple[Corruption, ...]:
    """The suite, or the corruptions named (UsageError for a name it lacks)."""
    if not names:
        return SUITE
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        raise UsageError(f"unknown corruption {unknown[0]!r}; the suite has {', '.join(NAMES)}")
    return tuple(c for c in SUITE if c.name in names)


# ---------------------------------------------------------------------------- scoring
def robustness(pred: Predictor, faces, tta: str, seed: int = 0, corruptions: tuple[Corruption, ...] = SUITE,
               progress: bool = False) -> dict:
    """Score `pred` (its prior correction included) on `faces` (a FaceSet) clean and under every corruption:
    {"faces", "clean": {accuracy, balanced_accuracy}, "rows": [...], "mean_drop", "mean_balanced_drop"};
    drops are clean minus corrupted, as fractions."""
    from tqdm import tqdm

    _, keep, y = align_classes(faces.class_names, faces.labels, pred.classes)
    images = faces.images[keep]
    if not len(images):
        raise UsageError("no faces of the model's classes to score")

    def score(c: Corruption | None) -> dict:
        probs = predict_tta(pred.predict, corrupt(images, c, seed), tta, adjust=pred.adjust)
        m = compute_metrics(probs, y, pred.classes)
        return {"accuracy": m["accuracy"], "balanced_accuracy": m["balanced_accuracy"], "macro_f1": m["macro_f1"]}

    clean, rows = score(None), []
    for c in tqdm(corruptions, desc=f"corruptions (TTA {tta})", unit="corruption", disable=not progress,
                  leave=False, file=sys.stderr, mininterval=0.5 if sys.stderr.isatty() else 10):
        s = score(c)
        rows.append({"corruption": c.name, "severity": c.severity, "label": c.label, **s,
                     "drop": clean["accuracy"] - s["accuracy"],
                     "balanced_drop": clean["balanced_accuracy"] - s["balanced_accuracy"]})
    return {"faces": len(images), "clean": clean, "rows": rows,
            "mean_drop": float(np.mean([r["drop"] for r in rows])) if rows else 0.0,
            "mean_balanced_drop": float(np.mean([r["balanced_drop"] for r in rows])) if rows else 0.0}


def robustness_report(pred: Predictor, splits: dict, tta: str, every: int | None = None, seed: int = 0,
                      corruptions: tuple[Corruption, ...] = SUITE, progress: bool = False) -> dict:
    """The suite over each split of `splits` ({name: FaceSet}; every Nth face with `every`), with what was scored."""
    from ferkit.evaluation.score import every_nth

    out = {"model": {"path": str(pred.path), "name": pred.name, "backend": pred.backend,
                     "architecture": pred.architecture, "classes": list(pred.classes), "prior_tau": pred.prior_tau},
           "tta": tta, "seed": seed, "every": every, "splits": {}}
    for name, whole in splits.items():
        out["splits"][name] = {"faces_in_split": len(whole),
                               **robustness(pred, every_nth(whole, every), tta, seed, corruptions, progress)}
    return out
