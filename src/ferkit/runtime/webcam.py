"""A live window: webcam (or a video file) with boxes, labels and FPS.

OpenCV's headless wheel (ferkit's dependency) has no windows, so the window is Tk (Python's standard
library) unless the installed OpenCV has a GUI. Where there is no display at all, `DisplayError`
says so and points at `ferkit serve`, which uses the browser's camera instead.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import cv2
import numpy as np

from ferkit.errors import DisplayError, VideoError  # noqa: F401 (re-exported)
from ferkit.runtime.pipeline import Analyzer
from ferkit.runtime.tracking import live_frames

SERVE_HINT = ("run `ferkit serve` and open http://127.0.0.1:8000 in a browser on the machine with the camera: "
              "the page uses the browser's own webcam")


def has_display() -> bool:
    if sys.platform in ("win32", "darwin"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def opencv_has_gui() -> bool:
    return "GUI:                           NONE" not in cv2.getBuildInformation()


def open_source(source: str | int, max_pixels: int | None = None) -> cv2.VideoCapture:
    """A camera index (0, 1, ...) or a video file, opened for reading (files: see `ferkit.runtime.video.open_video`)."""
    src: str | int = int(source) if isinstance(source, int) or str(source).isdigit() else str(source)
    if isinstance(src, str):
        from ferkit.runtime.video import open_video

        p = Path(src)
        if not p.exists() and not p.is_symlink():
            raise VideoError(f"{p}: no such video file")
        return open_video(p, max_pixels)[0]
    cap = cv2.VideoCapture(src)
    if not cap.isOpened():
        raise VideoError(f"cannot open camera {src}: no camera there, or no permission to use it "
                         "(try another index, or --source FILE to play a video)")
    return cap


def run_webcam(source: str | int, analyzer: Analyzer, every: int = 1, max_frames: int | None = None,
               title: str = "ferkit — press q to quit") -> int:
    """Show the live window until q/Esc, the window is closed or the source ends. Returns frames shown."""
    from ferkit.runtime.video import check_frame_limit

    check_frame_limit(max_frames)
    if not has_display():
        raise DisplayError(f"no display here (DISPLAY is not set), so no window can open. Instead, {SERVE_HINT}")
    cap = open_source(source)
    try:
        if opencv_has_gui():
            return _run_opencv(cap, analyzer, every, max_frames, title)
        try:
            import tkinter  # noqa: F401
        except ImportError:
            raise DisplayError(f"neither OpenCV nor Python here has a GUI toolkit (tkinter is missing). Instead, {SERVE_HINT}") from None
        return _run_tk(cap, analyzer, every, max_frames, title)
    finally:
        cap.release()


def _run_opencv(cap, analyzer, every, max_frames, title) -> int:
    shown = 0
    for img, _, _ in live_frames(cap, analyzer, every, max_frames):
        cv2.imshow(title, img)
        shown += 1
        if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
            break
    cv2.destroyAllWindows()
    return shown


def _ppm(bgr: np.ndarray) -> bytes:
    h, w = bgr.shape[:2]
    return f"P6 {w} {h} 255 ".encode() + cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).tobytes()


def _run_tk(cap, analyzer, every, max_frames, title) -> int:
    import tkinter as tk

    try:
        root = tk.Tk()
    except tk.TclError as exc:
        raise DisplayError(f"cannot open a window ({exc}). Instead, {SERVE_HINT}") from None
    root.title(title)
    label = tk.Label(root)
    label.pack()
    stream = live_frames(cap, analyzer, every, max_frames)
    state = {"shown": 0, "image": None, "done": False}

    def stop(*_):
        state["done"] = True
        root.quit()

    def step():
        if state["done"]:
            return
        try:
            img, _, _ = next(stream)
        except StopIteration:
            stop()
            return
        state["image"] = tk.PhotoImage(data=_ppm(img), format="PPM")
        label.configure(image=state["image"])
        state["shown"] += 1
        root.after(1, step)

    root.bind("<q>", stop)
    root.bind("<Escape>", stop)
    root.protocol("WM_DELETE_WINDOW", stop)
    root.after(1, step)
    root.mainloop()
    try:
        root.destroy()
    except tk.TclError:
        pass
    return state["shown"]
