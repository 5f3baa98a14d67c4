"""The one preprocessing definition shared by training and serving (numpy + OpenCV only).

A face crop of any size, colour or depth becomes a 48x48 uint8 grey image (`to_face48`); a batch of
those becomes the float32 network input (`normalize`). Training applies `normalize` to the same
uint8 arrays, so the model sees identical numbers in both places. Test-time augmentation views
(`tta_views`) are built here too, so `ferkit evaluate` scores exactly what the runtime computes.
"""

from __future__ import annotations

import cv2
import numpy as np

INPUT_SIZE = 48
# Test-time augmentation modes: the views whose softmax probabilities are averaged (see tta_views).
TTA_MODES = ("none", "flip", "crops", "multi")
CROP_SIZE = 44  # crops: 5 crops of 44x44 (4 corners + centre), each resized back to 48, and their mirrors
MULTI_SHIFT = 2  # multi: the face moved this many pixels left, right, up and down (edges repeated)
MULTI_ZOOMS = (0.92, 1.08, 1.16)  # multi: the face rescaled about its centre (edges repeated when shrunk)
# Pixels are scaled to [0, 1] then standardised with the FER2013 Training mean and std.
MEAN = 0.5077
STD = 0.2552


def to_gray_uint8(image: np.ndarray) -> np.ndarray:
    """Any decoded image (grey, BGR, BGRA; uint8, uint16 or float) -> 2-D uint8 grey."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype.kind == "f":
        scale = 255.0 if float(np.nanmax(img, initial=0.0)) <= 1.0 else 1.0
        img = np.clip(np.nan_to_num(img) * scale, 0, 255).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
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


def normalize(faces: np.ndarray) -> np.ndarray:
    """uint8 faces (N, H, W) or (H, W) -> float32 network input (N, 1, H, W)."""
    x = np.asarray(faces, dtype=np.float32)
    if x.ndim == 2:
        x = x[None]
    return ((x / 255.0 - MEAN) / STD)[:, None, :, :].astype(np.float32, copy=False)


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
        raise ValueError(f"unknown TTA mode {mode!r}; choose one of {', '.join(TTA_MODES)}")
    return views + [np.ascontiguousarray(v[:, :, ::-1]) for v in views]
