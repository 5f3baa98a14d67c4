"""Draw boxes, labels and confidences on images (OpenCV only)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

# BGR colours per emotion, readable on photos.
COLORS: dict[str, tuple[int, int, int]] = {
    "angry": (40, 40, 220), "disgust": (40, 140, 40), "fear": (160, 60, 160), "happy": (0, 200, 255),
    "sad": (200, 110, 30), "surprise": (220, 220, 0), "neutral": (190, 190, 190), "contempt": (30, 90, 150),
}
FONT = cv2.FONT_HERSHEY_SIMPLEX


def color_for(label: str) -> tuple[int, int, int]:
    return COLORS.get(label, (0, 255, 0))


def _text_with_background(img, text, x, y, scale, thickness, color, above=True) -> None:
    (tw, th), base = cv2.getTextSize(text, FONT, scale, thickness)
    pad = max(2, int(round(3 * scale)))
    h, w = img.shape[:2]
    x = int(min(max(0, x), max(0, w - tw - 2 * pad)))
    top = y - th - base - 2 * pad if above else y
    if top < 0:
        top = y if above else max(0, y - th - base - 2 * pad)
    top = int(min(top, max(0, h - th - base - 2 * pad)))
    cv2.rectangle(img, (x, top), (x + tw + 2 * pad, top + th + base + 2 * pad), color, -1)
    luminance = 0.114 * color[0] + 0.587 * color[1] + 0.299 * color[2]
    ink = (0, 0, 0) if luminance > 140 else (255, 255, 255)
    cv2.putText(img, text, (x + pad, top + pad + th), FONT, scale, ink, thickness, cv2.LINE_AA)


def draw_results(image: np.ndarray, faces: Sequence, *, show_id: bool = False, copy: bool = True) -> np.ndarray:
    """Boxes with 'label 87%' for each face (`FaceResult`s or dicts with box/label/confidence)."""
    img = image.copy() if copy else image
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    h, w = img.shape[:2]
    for f in faces:
        d = f if isinstance(f, dict) else f.to_dict()
        x1, y1, x2, y2 = (int(round(v)) for v in d["box"])
        size = max(x2 - x1, y2 - y1, 1)
        color = color_for(d["label"])
        thickness = max(1, int(round(max(size / 60, min(h, w) / 400))))
        cv2.rectangle(img, (x1, y1), (x2, y2), color, thickness, cv2.LINE_AA)
        scale = float(np.clip(size / 160, 0.4, 3.0) * max(1.0, min(h, w) / 1000))
        text = f"{d['label']} {d['confidence'] * 100:.0f}%"
        if show_id and d.get("track_id") is not None:
            text = f"#{d['track_id']} {text}"
        _text_with_background(img, text, x1 - thickness // 2, y1 - thickness // 2, scale, max(1, int(scale * 1.6)), color)
    return img


def draw_fps(image: np.ndarray, fps: float) -> np.ndarray:
    h, w = image.shape[:2]
    scale = max(0.5, min(h, w) / 600)
    _text_with_background(image, f"{fps:.1f} FPS", 4, 4, scale, max(1, int(scale * 1.6)), (30, 30, 30), above=False)
    return image
