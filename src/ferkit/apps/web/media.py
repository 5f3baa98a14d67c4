"""What an upload is, told from its bytes (never its name or declared type), and decoding it with 4xx errors."""

from __future__ import annotations

import numpy as np

from ferkit.apps.web.errors import ApiError
from ferkit.images import ImageError, ImageTooLargeError, decode_image

IMAGE_FORMATS = "JPEG, PNG, WebP, GIF, BMP, TIFF"
VIDEO_FORMATS = "MP4/MOV, WebM/MKV, AVI, MPEG, MPEG-TS, Ogg, FLV, WMV, Y4M, animated GIF"


def sniff_image(data: bytes) -> str | None:
    """'jpeg', 'png', … from the magic bytes, or None."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:2] == b"BM" and len(data) > 26:
        return "bmp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    return None


def sniff_video(head: bytes) -> str | None:
    """A file suffix for the container the first bytes show ('.mp4', '.mkv', …), or None.

    Only real media containers pass: a text file (an HLS/concat playlist that would make FFmpeg open other
    files or URLs) never reaches the decoder.
    """
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
        return ".mp4"
    if head[:4] == b"\x1aE\xdf\xa3":
        return ".mkv"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return ".avi"
    if head[:4] in (b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3"):
        return ".mpg"
    if len(head) > 376 and head[0] == 0x47 and head[188] == 0x47 and head[376] == 0x47:
        return ".ts"
    if head[:4] == b"OggS":
        return ".ogv"
    if head[:3] == b"FLV":
        return ".flv"
    if head[:8] == b"\x30\x26\xb2\x75\x8e\x66\xcf\x11":
        return ".wmv"
    if head[:9] == b"YUV4MPEG2":
        return ".y4m"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return ".gif"
    return None


def decode_upload(data: bytes, name: str, max_pixels: int) -> np.ndarray:
    """Image bytes -> BGR array, or an ApiError saying what was wrong (400/413/415/422)."""
    if not data:
        raise ApiError(400, f"{name}: empty (0 bytes); send an image ({IMAGE_FORMATS})", "empty_upload")
    kind = sniff_image(data)
    try:
        return decode_image(data, name, max_pixels)
    except ImageTooLargeError as exc:
        raise ApiError(413, str(exc), "too_many_pixels") from None
    except ImageError:
        if kind is None:
            what = "text" if _looks_like_text(data) else "data"
            raise ApiError(415, f"{name}: this {what} is not an image in a format we read ({IMAGE_FORMATS})",
                           "unsupported_media_type") from None
        raise ApiError(422, f"{name}: starts like a {kind.upper()} but cannot be decoded (truncated or corrupt)",
                       "unreadable_image") from None


def _looks_like_text(data: bytes) -> bool:
    head = data[:512]
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
