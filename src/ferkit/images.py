"""Reading images from files or bytes with clear errors: OpenCV first, Pillow for what OpenCV lacks.

Decompression bombs are refused before any pixel is decoded: the size comes from the header (Pillow's
reader, or our own for Radiance HDR, PFM, PAM, OpenEXR and TIFF, which Pillow cannot always open); a format whose
size cannot be told is decoded only under OpenCV's own pixel limit, which `import ferkit` sets from
FERKIT_MAX_PIXELS before OpenCV loads (`ferkit.OPENCV_MAX_PIXELS`), and refused otherwise.

Deep images keep their range: 16-bit pixels 0..65535 and float pixels 0..1 become 0..255
(`ferkit.preprocessing.to_uint8`), so a float TIFF is not decoded black.
"""

from __future__ import annotations

import io
import os
import re
import struct
from pathlib import Path

import cv2
import numpy as np

import ferkit
from ferkit.errors import ImageError, ImageTooLargeError, UsageError  # noqa: F401 (re-exported)
from ferkit.fileio import input_file
from ferkit.preprocessing import to_uint8


def _max_pixels_from_env() -> int:
    raw = os.environ.get(ferkit.MAX_PIXELS_ENV)
    if raw is None or not raw.strip():
        return ferkit.DEFAULT_MAX_PIXELS
    value = ferkit.parse_pixels(raw)
    if value is None:
        raise UsageError(f"{ferkit.MAX_PIXELS_ENV}={raw!r}: must be a whole number of pixels, 1 or more")
    return value


# Decompression-bomb guard: refuse images with more pixels than this (overridable per call).
MAX_PIXELS = _max_pixels_from_env()
# Bytes a file may have per allowed pixel (a 4-channel float TIFF, uncompressed, has 16) before it is not read at all.
MAX_BYTES_PER_PIXEL = 16

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".dib", ".gif", ".tif", ".tiff", ".webp",
                  ".pgm", ".ppm", ".pbm", ".pnm", ".pam", ".pfm", ".jp2", ".hdr", ".pic", ".avif", ".sr", ".ras",
                  ".exr"}


# -- sizes from headers ---------------------------------------------------------------------------------
def _pillow_size(data: bytes) -> tuple[int, int] | int | None:
    """Width and height from the header alone (no decode); the pixel count alone when the header declares
    more than Pillow will even open (its own bomb guard); None if Pillow cannot tell."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except Image.DecompressionBombError as exc:  # "Image size (400000000 pixels) exceeds limit of ..."
        found = re.search(r"\((\d+) pixels\)", str(exc))
        return int(found.group(1)) if found else 2 * int(Image.MAX_IMAGE_PIXELS or 0) + 1
    except Exception:
        return None


_HDR_RESOLUTION = re.compile(rb"^[+-]([XY]) +(\d+) +[+-]([XY]) +(\d+)\s*$")


def _hdr_size(data: bytes) -> tuple[int, int] | None:
    """Radiance HDR (.hdr/.pic): header lines, a blank line, then the resolution line, e.g. `-Y 480 +X 640`."""
    if not (data.startswith(b"#?RADIANCE") or data.startswith(b"#?RGBE")):
        return None
    lines = data[:65536].split(b"\n")
    for i, line in enumerate(lines[:-1]):
        if line.strip() == b"":
            found = _HDR_RESOLUTION.match(lines[i + 1])
            if not found or found.group(1) == found.group(3):
                return None
            a, b = int(found.group(2)), int(found.group(4))
            return (b, a) if found.group(1) == b"Y" else (a, b)  # (width, height)
    return None


def _pfm_size(data: bytes) -> tuple[int, int] | None:
    """Portable float map: `PF`/`Pf`, then width and height as text."""
    if data[:2] not in (b"PF", b"Pf") or len(data) < 3 or data[2:3] not in b" \t\r\n":
        return None
    tokens = data[2:256].split()
    try:
        return int(tokens[0]), int(tokens[1])
    except (IndexError, ValueError):
        return None


def _pam_size(data: bytes) -> tuple[int, int] | None:
    """Portable arbitrary map: `P7`, then `WIDTH w` and `HEIGHT h` header lines."""
    if not data.startswith(b"P7\n"):
        return None
    head = data[:1024].split(b"ENDHDR")[0]
    width, height = re.search(rb"\bWIDTH\s+(\d+)", head), re.search(rb"\bHEIGHT\s+(\d+)", head)
    return (int(width.group(1)), int(height.group(1))) if width and height else None


def _exr_size(data: bytes) -> tuple[int, int] | None:
    """OpenEXR: the `dataWindow` attribute (box2i: x min, y min, x max, y max) of its header."""
    if data[:4] != b"\x76\x2f\x31\x01":
        return None
    pos, end = 8, min(len(data), 1 << 20)
    while pos < end and data[pos] != 0:
        name_end = data.find(b"\0", pos, end)
        type_end = data.find(b"\0", name_end + 1, end)
        if name_end < 0 or type_end < 0 or type_end + 5 > end:
            return None
        (n,) = struct.unpack("<i", data[type_end + 1:type_end + 5])
        value = data[type_end + 5:type_end + 5 + n]
        if data[pos:name_end] == b"dataWindow" and len(value) == 16:
            x0, y0, x1, y1 = struct.unpack("<4i", value)
            return max(0, x1 - x0 + 1), max(0, y1 - y0 + 1)
        pos = type_end + 5 + max(0, n)
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """Width and height of a TIFF's first image from its first IFD (classic and BigTIFF)."""
    order = {b"II": "<", b"MM": ">"}.get(data[:2])
    if order is None or len(data) < 16:
        return None
    magic = struct.unpack(order + "H", data[2:4])[0]
    try:
        if magic == 42:
            (ifd,) = struct.unpack(order + "I", data[4:8])
            (count,) = struct.unpack(order + "H", data[ifd:ifd + 2])
            entry, start, fmt = 12, ifd + 2, "HHI4s"
        elif magic == 43:
            (ifd,) = struct.unpack(order + "Q", data[8:16])
            (count,) = struct.unpack(order + "Q", data[ifd:ifd + 8])
            entry, start, fmt = 20, ifd + 8, "HHQ8s"
        else:
            return None
        size: dict[int, int] = {}
        for k in range(min(count, 4096)):
            tag, kind, _n, value = struct.unpack(order + fmt, data[start + k * entry:start + (k + 1) * entry])
            if tag in (256, 257):  # ImageWidth, ImageLength: SHORT or LONG (or LONG8)
                code = {3: "H", 4: "I", 16: "Q"}.get(kind)
                if code is None:
                    return None
                size[tag] = struct.unpack(order + code, value[:struct.calcsize(code)])[0]
        return (size[256], size[257]) if len(size) == 2 else None
    except (struct.error, KeyError):
        return None


def header_size(data: bytes) -> tuple[int, int] | int | None:
    """(width, height) from the header, a bare pixel count (Pillow's bomb guard tripped), or None."""
    size = _pillow_size(data)
    if size is None:
        size = _hdr_size(data) or _pfm_size(data) or _pam_size(data) or _exr_size(data) or _tiff_size(data)
    return size


def check_pixels(data: bytes, name: str, limit: int) -> bool:
    """ImageTooLargeError when the header declares more than `limit` pixels; False when it cannot be told."""
    size = header_size(data)
    if isinstance(size, int) and size > limit:  # without this, OpenCV would decode a 20000x20000 bomb (GBs) first
        raise ImageTooLargeError(f"{name}: its header declares {size:,} pixels, over the limit of {limit:,}")
    if isinstance(size, tuple) and size[0] * size[1] > limit:
        raise ImageTooLargeError(f"{name}: {size[0]}x{size[1]} pixels is over the limit of {limit:,}")
    return size is not None


# -- decoding -------------------------------------------------------------------------------------------
def _cv_decode(buf: np.ndarray, flags: int, name: str) -> np.ndarray | None:
    """cv2.imdecode, its complaints silenced; its pixel limit as ImageTooLargeError, other failures None."""
    previous = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # we raise a clearer error ourselves
    try:
        return cv2.imdecode(buf, flags)
    except cv2.error as exc:
        if "CV_IO_MAX_IMAGE" in str(exc) or "validateInputImageSize" in str(exc):
            raise ImageTooLargeError(f"{name}: over OpenCV's decoder limit of {ferkit.OPENCV_MAX_PIXELS or 2 ** 30:,} "
                                     "pixels (OPENCV_IO_MAX_IMAGE_PIXELS)") from None
        return None
    finally:
        cv2.utils.logging.setLogLevel(previous)


def _to_bgr8(img: np.ndarray) -> np.ndarray:
    """A decoded image of any depth and 1/3/4 channels -> 8-bit BGR, its range kept (see to_uint8)."""
    img = to_uint8(img)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    return img


def _pillow_decode(data: bytes) -> np.ndarray | None:
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(data)) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode == "F" or im.mode.startswith("I"):  # 32-bit float, 32-bit int or 16-bit grey
                grey = np.asarray(im)
                if grey.dtype.kind in "iu":  # 8-bit values kept; 16-bit (or wider) values scaled to 0..1
                    peak = int(grey.max(initial=0))
                    grey = grey.clip(0, 255).astype(np.uint8) if peak <= 255 else \
                        (grey.clip(0, None) / float(max(peak, 65535))).astype(np.float32)
                return _to_bgr8(grey)
            rgb = np.asarray(im.convert("RGB"))
    except Exception:
        return None
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


def _png_has_alpha(data: bytes) -> bool:
    """PNG colour type 4 (grey + alpha) or 6 (RGBA), read from the IHDR header."""
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 25 and data[25] in (4, 6)


def _composite_png_alpha(buf: np.ndarray, fallback: np.ndarray, name: str) -> np.ndarray:
    """Transparent pixels become white (what a viewer shows), not whatever colour hides under them."""
    full = _cv_decode(buf, cv2.IMREAD_UNCHANGED, name)
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
    if not check_pixels(data, name, limit) and ferkit.OPENCV_MAX_PIXELS is None:
        # Not sized by any header reader, and OpenCV loaded before ferkit could set its own limit: nothing
        # would stop a bomb, so it is not decoded (every format OpenCV and Pillow read is sized above).
        raise ImageError(f"{name}: not a readable image (unknown format or truncated data)")
    buf = np.frombuffer(data, dtype=np.uint8)
    # IMREAD_COLOR applies EXIF orientation; ANYDEPTH keeps 16-bit and float pixels for to_uint8 to scale.
    img = _cv_decode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH, name)
    if img is not None:
        img = _to_bgr8(img)
        if _png_has_alpha(data):
            img = _composite_png_alpha(buf, img, name)
    if img is None:
        img = _pillow_decode(data)
    if img is None:
        raise ImageError(f"{name}: not a readable image (unknown format or truncated data)")
    if img.shape[0] * img.shape[1] > limit:
        raise ImageTooLargeError(f"{name}: {img.shape[1]}x{img.shape[0]} pixels is over the limit of {limit:,}")
    return img


def read_image(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file -> 8-bit BGR. Raises ImageError naming the file (missing, a folder, a FIFO or
    other special file, unreadable, too large, not an image)."""
    path = Path(path)
    st = input_file(path, "an image", ImageError)
    limit = MAX_PIXELS if max_pixels is None else max_pixels
    if st.st_size > MAX_BYTES_PER_PIXEL * limit + (16 << 20):
        raise ImageTooLargeError(f"{path}: {st.st_size:,} bytes is more than an image of at most {limit:,} pixels needs")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return decode_image(data, str(path), max_pixels)
