"""ferkit: facial expression recognition — train, ship and run FER models.

The top-level package stays light: importing it never pulls in torch. `ferkit.analyze` and
`ferkit.FacialExpressionModel` load the run time (numpy, OpenCV, onnxruntime) on first use;
`ferkit.read_results` (the tables `ferkit analyze` writes) loads pyarrow and pandas.

Importing ferkit also sets OpenCV's decoder pixel limit (OPENCV_IO_MAX_IMAGE_PIXELS, unless already set)
to FERKIT_MAX_PIXELS: OpenCV reads it once, when cv2 loads, so it must be set before anything imports cv2.
"""

import os as _os
import sys as _sys

__version__ = "0.1.0"

__all__ = ["__version__", "analyze", "FacialExpressionModel", "read_results"]

MAX_PIXELS_ENV = "FERKIT_MAX_PIXELS"  # the decompression-bomb guard of ferkit.images (pixels an image may have)
DEFAULT_MAX_PIXELS = 80_000_000


def parse_pixels(raw: str | None) -> int | None:
    """A pixel count from an environment variable ('80000000', '80_000_000'); None if it is not one."""
    try:
        value = int(str(raw).strip())
    except (TypeError, ValueError):
        return None
    return value if value >= 1 else None


def _opencv_pixel_limit() -> int | None:
    """Set OpenCV's decoder limit before cv2 loads; the limit OpenCV enforces here, or None if unknown
    (cv2 was imported before ferkit, so whatever it read then is not known for sure)."""
    if "cv2" in _sys.modules:
        return None
    ours = parse_pixels(_os.environ.get(MAX_PIXELS_ENV)) or DEFAULT_MAX_PIXELS
    _os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(ours))
    return parse_pixels(_os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"])


OPENCV_MAX_PIXELS = _opencv_pixel_limit()


def __getattr__(name: str):
    if name in ("analyze", "FacialExpressionModel"):
        from ferkit import runtime

        return getattr(runtime, name)
    if name == "read_results":
        from ferkit.results import read_results

        return read_results
    raise AttributeError(f"module 'ferkit' has no attribute {name!r}")
