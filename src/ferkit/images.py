"""Reading images from files or bytes with clear errors: OpenCV first, Pillow for what OpenCV lacks."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from ferkit.errors import ImageError, ImageTooLargeError  # noqa: F401 (re-exported)

# Decompression-bomb guard: refuse images with more pixels than this (overridable per call).
MAX_PIXELS = int(os.environ.get("FERKIT_MAX_PIXELS", 80_000_000))




def _pillow_size(data: bytes) -> tuple[int, int] | int | None:
    """Width and height from the header alone (no decode); the pixel count alone when the header declares
    more than Pillow will even open (its own bomb guard); None if Pillow cannot tell."""
    import io
    import re

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except Image.DecompressionBombError as exc:  # "Image size (400000000 pixels) exceeds limit of ..."
        found = re.search(r"\((\d+) pixels\)", str(exc))
        return int(found.group(1)) if found else 2 * int(Image.MAX_IMAGE_PIXELS or 0) + 1
    except Exception:
        return None


def _pillow_decode(data: bytes) -> np.ndarray | None:
    import io

    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(data)) as im:
            im = ImageOps.exif_transpose(im)
            rgb = np.asarray(im.convert("RGB"))
    except Exception:
        return None
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


def _png_has_alpha(data: bytes) -> bool:
    """PNG colour type 4 (grey + alpha) or 6 (RGBA), read from the IHDR header."""
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 25 and data[25] in (4, 6)


def _composite_png_alpha(buf: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Transparent pixels become white (what a viewer shows), not whatever colour hides under them."""
    full = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if full is None or full.ndim != 3 or full.shape[2] not in (2, 4):
        return fallback
    if full.shape[2] == 2:  # grey + alpha
        color, alpha = np.repeat(full[:, :, :1], 3, axis=2), full[:, :, 1]
    else:
        color, alpha = full[:, :, :3], full[:, :, 3]
    peak = 65535.0 if full.dtype == np.uint16 else 255.0
    a = alpha.astype(np.float32)[:, :, None] / peak
    out = color.astype(np.float32) / peak * a + (1.0 - a)
    return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)


def decode_image(data: bytes, name: str = "<bytes>", max_pixels: int | None = None) -> np.ndarray:
    """Encoded bytes -> 8-bit BGR image, EXIF orientation applied. Raises ImageError naming `name`."""
    if not data:
        raise ImageError(f"{name}: empty file (0 bytes)")
    limit = MAX_PIXELS if max_pixels is None else max_pixels
    size = _pillow_size(data)
    if isinstance(size, int) and size > limit:  # without this, OpenCV would decode a 20000x20000 bomb (GBs) first
        raise ImageTooLargeError(f"{name}: its header declares {size:,} pixels, over the limit of {limit:,}")
    if isinstance(size, tuple) and size[0] * size[1] > limit:
        raise ImageTooLargeError(f"{name}: {size[0]}x{size[1]} pixels is over the limit of {limit:,}")
    buf = np.frombuffer(data, dtype=np.uint8)
    previous = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # OpenCV's own complaints about bad data: we raise a clearer error below
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)  # applies EXIF orientation, maps 16-bit/grey/alpha to 8-bit BGR
    finally:
        cv2.utils.logging.setLogLevel(previous)
    if img is not None and _png_has_alpha(data):
        img = _composite_png_alpha(buf, img)
    if img is None:
        img = _pillow_decode(data)
    if img is None:
        raise ImageError(f"{name}: not a readable image (unknown format or truncated data)")
    if img.shape[0] * img.shape[1] > limit:
        raise ImageTooLargeError(f"{name}: {img.shape[1]}x{img.shape[0]} pixels is over the limit of {limit:,}")
    return img


def read_image(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file -> 8-bit BGR. Raises ImageError naming the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory, not an image") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return decode_image(data, str(path), max_pixels)


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm", ".jp2"}
