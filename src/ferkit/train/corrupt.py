"""Camera faults as training augmentation (`train --corrupt P`), on the uint8 faces (numpy + OpenCV).

Users' faces come blurred, noisy, JPEG-compressed, upscaled from a few pixels, too dark or too bright;
FER2013's are mostly clean. With probability P a training face gets one fault drawn at random, with a
second on top a quarter of the time (a small JPEG is often a blurred one too), each at a severity drawn
from a wide continuous range rather than a few fixed levels, so the net learns the kind of change and
not a test's settings. The faults are applied before the geometric augmentation, as a camera's faults
come before the detector's crop. Every draw comes from the generator passed in, so a resumed run
repeats them.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

SECOND_FAULT = 0.25  # chance a corrupted face gets a second fault of another kind


def _blur(face: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    sigma = rng.uniform(0.4, 2.0)  # pixels of the 48-pixel face
    return cv2.GaussianBlur(face, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)


def _noise(face: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    sigma = rng.uniform(3.0, 25.0)  # grey levels
    return _to_uint8(face + rng.normal(0.0, sigma, face.shape))


def _jpeg(face: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    quality = int(rng.integers(10, 71))
    ok, buf = cv2.imencode(".jpg", face, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE) if ok else face


def _lowres(face: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = face.shape
    side = int(rng.integers(14, 37))  # the face as few pixels across, then upscaled back
    small = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
    up = (cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_NEAREST)[int(rng.integers(3))]
    return cv2.resize(small, (w, h), interpolation=up)


def _tone(face: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    gamma = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
    contrast = float(np.exp(rng.uniform(np.log(0.4), np.log(1.5))))
    brightness = rng.uniform(-50.0, 50.0)
    x = 255.0 * (face / 255.0) ** gamma
    x = x.mean() + contrast * (x - x.mean()) + brightness
    return _to_uint8(x)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


FAULTS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "blur": _blur, "noise": _noise, "jpeg": _jpeg, "lowres": _lowres, "tone": _tone,
}


def corrupt_faces(faces: np.ndarray, rng: np.random.Generator, p: float) -> np.ndarray:
    """A copy of uint8 faces (N, H, W) in which each face, with probability p, has one or two faults."""
    if p <= 0:
        return faces
    out = np.array(faces, copy=True)
    kinds = list(FAULTS)
    for i in np.flatnonzero(rng.random(len(out)) < p):
        order = rng.permutation(len(kinds))
        count = 2 if rng.random() < SECOND_FAULT else 1
        for k in order[:count]:
            out[i] = FAULTS[kinds[k]](out[i], rng)
    return out
