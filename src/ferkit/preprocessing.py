"""The one preprocessing definition shared by training and serving (numpy + OpenCV only).

A face crop of any size, colour or depth becomes a 48x48 uint8 grey image (`to_face48`); a batch of
those becomes the float32 network input (`normalize`). Training applies `normalize` to the same
uint8 arrays, so the model sees identical numbers in both places.
"""

from __future__ import annotations

import cv2
import numpy as np

INPUT_SIZE = 48
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
