"""Real test media for the runtime tests, built in tmp dirs: photos, collages and encoded videos."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np


def astronaut_bgr() -> np.ndarray:
    from skimage import data

    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


def two_faces_frame(t: float, size=(640, 480)) -> np.ndarray:
    """A 640x480 frame with two astronaut portraits (one mirrored) drifting sideways with time t in [0, 1]."""
    w, h = size
    a = astronaut_bgr()
    head = cv2.resize(a[0:300, 100:360], (208, 240), interpolation=cv2.INTER_AREA)  # head and shoulders
    frame = np.full((h, w, 3), (170, 160, 150), np.uint8)
    shift = int(round(60 * t))
    for x, face in ((40 + shift, head), (380 - shift, head[:, ::-1])):
        frame[120:360, x:x + 208] = face
    return frame


def write_video(path: Path, n: int = 40, fps: float = 20.0, fourcc: str = "mp4v", size=(640, 480)) -> Path:
    """Encode a real video (OpenCV's own encoder, independent of ferkit's writer)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    assert writer.isOpened(), f"OpenCV cannot write {fourcc} here"
    for i in range(n):
        writer.write(two_faces_frame(i / max(1, n - 1), size))
    writer.release()
    return path


def truncated_copy(src: Path, dst: Path, keep: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


def encode(image: np.ndarray, ext: str, **params) -> bytes:
    flags = []
    for k, v in params.items():
        flags += [getattr(cv2, k), v]
    ok, buf = cv2.imencode(ext, image, flags)
    assert ok
    return buf.tobytes()


def exif_rotated_jpeg(bgr: np.ndarray) -> bytes:
    """A JPEG stored on its side with EXIF orientation 6 (display rotated 90 degrees clockwise): upright when honoured."""
    from PIL import Image

    stored = cv2.rotate(bgr, cv2.ROTATE_90_COUNTERCLOCKWISE)
    im = Image.fromarray(cv2.cvtColor(stored, cv2.COLOR_BGR2RGB))
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=92, exif=exif.tobytes())
    return buf.getvalue()


ASTRONAUT_FACE = (180, 55, 272, 180)  # x1, y1, x2, y2 of Eileen Collins' face in astronaut.png (512x512)


def overlaps(box, ref=ASTRONAUT_FACE, min_iou: float = 0.4) -> bool:
    from ferkit.runtime.tracking import box_iou

    return box_iou(box, ref) >= min_iou


def fer_collage(faces: np.ndarray, size: int = 160, cols: int = 3, gap: int = 60) -> tuple[np.ndarray, list[tuple]]:
    """FER2013 faces upscaled and laid out on a grey page; returns the BGR image and each face's box."""
    n = len(faces)
    rows = -(-n // cols)
    h, w = rows * (size + gap) + gap, cols * (size + gap) + gap
    page = np.full((h, w), 128, np.uint8)
    boxes = []
    for i, face in enumerate(faces):
        r, c = divmod(i, cols)
        x, y = gap + c * (size + gap), gap + r * (size + gap)
        page[y:y + size, x:x + size] = cv2.resize(face, (size, size), interpolation=cv2.INTER_CUBIC)
        boxes.append((x, y, x + size, y + size))
    return cv2.cvtColor(page, cv2.COLOR_GRAY2BGR), boxes
