"""Pictures of results: a probability bar chart per face, and emotions over time (matplotlib, Agg).

Figures are made with `matplotlib.figure.Figure` directly, never pyplot, so this works in servers and
threads without a display.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np

from ferkit.runtime.draw import color_for


def _rgb(label: str) -> tuple[float, float, float]:
    b, g, r = color_for(label)
    return (r / 255, g / 255, b / 255)


CHART_FORMATS = ("png", "svg", "pdf", "jpg", "jpeg", "webp", "tif", "tiff", "eps", "ps")


def chart_format(path: str | Path | None) -> str:
    """The file format a chart written to `path` gets (by its suffix; PNG without one); OutputError otherwise."""
    fmt = Path(path).suffix.lower().lstrip(".") if path is not None else ""
    if not fmt:
        return "png"
    if fmt not in CHART_FORMATS:
        from ferkit.errors import OutputError

        raise OutputError(f"{path}: cannot write a chart as .{fmt} (use .png, .svg, .pdf or .jpg)")
    return fmt


def _save(fig, path: str | Path | None) -> bytes | Path:
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from ferkit.fileio import atomic_write_bytes

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format=chart_format(path), dpi=100)
    if path is None:
        return buf.getvalue()
    return atomic_write_bytes(path, buf.getvalue())  # never a half-written chart


def _face_thumb(image: np.ndarray, box, size: int = 128) -> np.ndarray:
    h, w = image.shape[:2]
    x1, y1, x2, y2 = box
    pad = 0.15 * max(x2 - x1, y2 - y1)
    x1, y1 = int(max(0, x1 - pad)), int(max(0, y1 - pad))
    x2, y2 = int(min(w, x2 + pad)), int(min(h, y2 + pad))
    crop = image[y1:y2, x1:x2]
    if crop.size == 0:
        return np.zeros((size, size, 3), np.uint8)
    crop = crop if crop.ndim == 3 else cv2.cvtColor(crop, cv2.COLOR_GRAY2BGR)
    return cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)


def probability_chart(faces: Sequence, path: str | Path | None = None, image: np.ndarray | None = None,
                      title: str | None = None) -> bytes | Path:
    """One horizontal bar chart of class probabilities per face (with the face beside it when `image` is given).

    Returns the PNG path, or the PNG bytes when `path` is None.
    """
    from matplotlib.figure import Figure

    dicts = [f if isinstance(f, Mapping) else f.to_dict() for f in faces]
    n = max(1, len(dicts))
    cols = 2 if image is not None else 1
    fig = Figure(figsize=(7.5 if cols == 2 else 5.5, 2.6 * n), layout="constrained")
    if title:
        fig.suptitle(title)
    if not dicts:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no face found", ha="center", va="center", fontsize=14)
        ax.set_axis_off()
        return _save(fig, path)
    grid = fig.add_gridspec(n, cols, width_ratios=[1, 2.6] if cols == 2 else [1])
    for i, d in enumerate(dicts):
        if image is not None:
            ax_img = fig.add_subplot(grid[i, 0])
            ax_img.imshow(_face_thumb(image, d["box"]))
            ax_img.set_axis_off()
        ax = fig.add_subplot(grid[i, cols - 1])
        names = list(d["probabilities"])
        values = [d["probabilities"][k] for k in names]
        colors = [_rgb(k) if k == d["label"] else (0.72, 0.72, 0.72) for k in names]
        ax.barh(names, values, color=colors)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        for y, v in enumerate(values):
            ax.text(min(v + 0.01, 0.86), y, f"{v:.0%}", va="center", fontsize=8)
        label = f"#{d['track_id']} " if d.get("track_id") is not None else ""
        ax.set_title(f"Face {i + 1}: {label}{d['label']} ({d['confidence']:.0%})", fontsize=10, loc="left")
        ax.tick_params(labelsize=9)
    return _save(fig, path)


def timeline_chart(times: Mapping[int, Sequence[float]], probs: Mapping[int, np.ndarray], classes: Sequence[str],
                   path: str | Path | None = None, max_tracks: int = 6, title: str | None = None) -> bytes | Path:
    """Emotions over time: one panel per tracked face (the longest `max_tracks`), a line per class."""
    from matplotlib.figure import Figure

    ids = sorted(times, key=lambda k: -len(times[k]))[:max_tracks]
    ids.sort()
    n = max(1, len(ids))
    fig = Figure(figsize=(9, 2.4 * n + 0.6), layout="constrained")
    fig.suptitle(title or "Emotions over time")
    if not ids:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no face found in the video", ha="center", va="center", fontsize=14)
        ax.set_axis_off()
        return _save(fig, path)
    axes = fig.subplots(n, 1, sharex=True, squeeze=False)[:, 0]
    for ax, k in zip(axes, ids):
        t = np.asarray(times[k], dtype=float)
        p = np.asarray(probs[k], dtype=float)
        for j, c in enumerate(classes):
            ax.plot(t, p[:, j], label=c, color=_rgb(c), linewidth=1.6)
        ax.set_ylim(0, 1)
        ax.set_ylabel(f"face #{k}")
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("time (s)")
    axes[0].legend(ncol=min(8, len(classes)), fontsize=8, loc="upper left", bbox_to_anchor=(0, 1.35), frameon=False)
    return _save(fig, path)
