"""The one preprocessing definition shared by training and serving (numpy + OpenCV only).

A face crop of any size, colour or depth becomes a 48x48 uint8 grey image (`to_face48`); a batch of
those becomes the float32 network input (`normalize`). Training applies `normalize` to the same
uint8 arrays, so the model sees identical numbers in both places. Test-time augmentation views
(`tta_views`) are built and averaged (`average_views`) here too, so `ferkit evaluate` scores exactly
what the runtime computes; `check_tta` is the one check of a TTA name and `live_tta` the one rule for
the TTA of live frames (webcam, video files, streams, the live WebSocket, video jobs).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import cv2
import numpy as np

from ferkit.errors import UsageError

INPUT_SIZE = 48
# Test-time augmentation modes: the views whose softmax probabilities are averaged (see tta_views).
TTA_MODES = ("none", "flip", "crops", "multi")
CROP_SIZE = 44  # crops: 5 crops of 44x44 (4 corners + centre), each resized back to 48, and their mirrors
MULTI_SHIFT = 2  # multi: the face moved this many pixels left, right, up and down (edges repeated)
MULTI_ZOOMS = (0.92, 1.08, 1.16)  # multi: the face rescaled about its centre (edges repeated when shrunk)
# Pixels are scaled to [0, 1] then standardised with the FER2013 Training mean and std.
MEAN = 0.5077
STD = 0.2552


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Pixels of any depth -> uint8 by their range: uint16 0..65535 and float 0..1 become 0..255
    (a float image with values above 1 is taken as 0..255 already); NaN is 0, the rest is clipped."""
    img = np.asarray(image)
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return (img >> 8).astype(np.uint8)
    if img.dtype.kind == "f":
        img = np.nan_to_num(img, nan=0.0, posinf=0.0, neginf=0.0)
        scale = 255.0 if float(img.max(initial=0.0)) <= 1.0 else 1.0
        return np.clip(img * scale, 0, 255).astype(np.uint8)
    return np.clip(img, 0, 255).astype(np.uint8)


def to_gray_uint8(image: np.ndarray) -> np.ndarray:
    """Any decoded image (grey, BGR, BGRA; uint8, uint16 or float) -> 2-D uint8 grey."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    img = to_uint8(img)
    if img.ndim == 3:
        if img.shape[2] == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY)
        elif img.shape[2] == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        else:
            raise ValueError(f"unsupported channel count {img.shape[2]}")
    if img.ndim != 2:
        raise ValueError(f"unsupported image shape {img.shape}")
    return img


def to_face48(image: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """A face crop -> (size, size) uint8 grey, area-resampled when shrinking."""
    gray = to_gray_uint8(image)
    if gray.shape == (size, size):
        return np.ascontiguousarray(gray)
    interp = cv2.INTER_AREA if min(gray.shape) >= size else cv2.INTER_LINEAR
    return cv2.resize(gray, (size, size), interpolation=interp)


def normalize(faces: np.ndarray, mean: float = MEAN, std: float = STD) -> np.ndarray:
    """uint8 faces (N, H, W) or (H, W) -> float32 network input (N, 1, H, W): pixel / 255, then
    standardised with `mean` and `std` (a model card's `input` block names its own)."""
    x = np.asarray(faces, dtype=np.float32)
    if x.ndim == 2:
        x = x[None]
    return ((x / 255.0 - mean) / std)[:, None, :, :].astype(np.float32, copy=False)


# ---------------------------------------------------------------------------- test-time augmentation
def five_crops(faces: np.ndarray, crop: int = CROP_SIZE) -> list[np.ndarray]:
    """uint8 faces (N, S, S) -> 5 arrays (N, S, S): the 4 corner crops and the centre crop, resized back to S."""
    n, h, w = faces.shape
    if crop >= min(h, w):
        return [faces]
    c0y, c0x = (h - crop) // 2, (w - crop) // 2
    offsets = [(0, 0), (0, w - crop), (h - crop, 0), (h - crop, w - crop), (c0y, c0x)]
    views = []
    for y, x in offsets:
        tile = faces[:, y:y + crop, x:x + crop]
        views.append(np.stack([cv2.resize(t, (w, h), interpolation=cv2.INTER_LINEAR) for t in tile])
                     if n else np.zeros_like(faces))
    return views


def shifted(faces: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """uint8 faces (N, H, W) moved by (dx, dy) pixels, the exposed border filled by repeating the edge."""
    m = max(abs(dx), abs(dy))
    if m == 0:
        return faces
    _, h, w = faces.shape
    padded = np.pad(faces, ((0, 0), (m, m), (m, m)), mode="edge")
    return np.ascontiguousarray(padded[:, m - dy:m - dy + h, m - dx:m - dx + w])


def zoomed(faces: np.ndarray, scale: float) -> np.ndarray:
    """uint8 faces (N, S, S) rescaled by `scale` about the centre: enlarged and centre-cropped, or
    shrunk and edge-padded, back to (S, S)."""
    n, s, _ = faces.shape
    size = int(round(s * scale))
    if size == s or n == 0:
        return faces
    out = np.empty_like(faces)
    for i, face in enumerate(faces):
        r = cv2.resize(face, (size, size), interpolation=cv2.INTER_LINEAR)
        if size > s:
            o = (size - s) // 2
            out[i] = r[o:o + s, o:o + s]
        else:
            o = (s - size) // 2
            out[i] = np.pad(r, ((o, s - size - o), (o, s - size - o)), mode="edge")
    return out


def check_tta(mode, option: str = "tta", error: type[Exception] = UsageError) -> str:
    """The one check of a TTA name: `mode` if it is one of TTA_MODES, else `error` naming `option`."""
    if mode not in TTA_MODES:
        raise error(f"{option} {mode!r}: unknown TTA mode; choose one of {', '.join(TTA_MODES)}")
    return mode


def live_tta(card_tta: str, requested: str | None = None) -> str:
    """The TTA for live frames (webcam, video files, streams, the live WebSocket, video jobs): a
    requested mode as asked; else the card's, at most flip (2 network runs a face). A tracked face is
    averaged over frames anyway, and 16 views a face would cut the frame rate several times."""
    if requested is not None:
        return check_tta(requested)
    card_tta = check_tta(card_tta)
    return card_tta if tta_cost(card_tta) <= tta_cost("flip") else "flip"


@functools.lru_cache(maxsize=None)
def tta_cost(mode: str) -> int:
    """Network runs a face costs under a TTA mode (the number of its views)."""
    return len(tta_views(np.zeros((1, INPUT_SIZE, INPUT_SIZE), np.uint8), mode))


def tta_views(faces: np.ndarray, mode: str = "none") -> list[np.ndarray]:
    """The views a TTA mode averages over, each uint8 (N, 48, 48).

    none: the face; flip: the face and its mirror image; crops: 5 crops (corners + centre) and their
    mirrors (10 views; the uncropped face is not one of them, as in 10-crop testing); multi: the face,
    the face shifted MULTI_SHIFT pixels each way and zoomed by each of MULTI_ZOOMS, and the mirror
    image of each (16 views).
    """
    faces = np.ascontiguousarray(faces, dtype=np.uint8)
    if faces.ndim != 3:
        raise ValueError(f"faces must be (N, H, W) uint8, got shape {faces.shape}")
    if mode == "none":
        return [faces]
    if mode == "flip":
        return [faces, np.ascontiguousarray(faces[:, :, ::-1])]
    if mode == "crops":
        views = five_crops(faces)
    elif mode == "multi":
        d = MULTI_SHIFT
        views = [faces] + [shifted(faces, dx, dy) for dx, dy in ((-d, 0), (d, 0), (0, -d), (0, d))] \
            + [zoomed(faces, z) for z in MULTI_ZOOMS]
    else:
        check_tta(mode)
    return views + [np.ascontiguousarray(v[:, :, ::-1]) for v in views]


MAX_BATCH = 256  # views a network run takes at most (average_views): bounds memory whatever the photo holds


def average_views(predict: Callable[[np.ndarray], np.ndarray], faces: np.ndarray, mode: str = "none",
                  max_batch: int = MAX_BATCH) -> np.ndarray:
    """Mean probabilities (N, C) over a TTA mode's views: the one averaging the runtime and `ferkit
    evaluate` share. `predict` maps uint8 faces (M, H, W) to probabilities (M, C); it is called on at
    most `max_batch` views at a time (at least one face's views), so memory stays bounded."""
    faces = np.ascontiguousarray(faces, dtype=np.uint8)
    if faces.ndim != 3 or len(faces) == 0:
        raise ValueError(f"faces must be a non-empty (N, H, W) uint8 array, got shape {faces.shape}")
    n_views = tta_cost(check_tta(mode))
    step = max(1, int(max_batch) // n_views)
    if n_views == 1 and len(faces) <= step:  # one view, one run: nothing to average (a live face, the fast tier)
        return np.asarray(predict(faces), dtype=np.float32)
    out = []
    for i in range(0, len(faces), step):
        chunk = faces[i:i + step]
        p = np.asarray(predict(np.concatenate(tta_views(chunk, mode))), dtype=np.float64)
        out.append(p.reshape(n_views, len(chunk), -1).mean(axis=0))
    return np.concatenate(out).astype(np.float32)
