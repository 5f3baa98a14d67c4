"""Run time: find faces in photos, videos and webcams and recognise their expressions.

Imports numpy, OpenCV and onnxruntime (Pillow and matplotlib for pictures) — never torch.

    from ferkit.runtime import analyze, FacialExpressionModel
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "analyze": "ferkit.runtime.pipeline",
    "Analyzer": "ferkit.runtime.pipeline",
    "FaceResult": "ferkit.runtime.pipeline",
    "FacialExpressionModel": "ferkit.runtime.model",
    "ModelError": "ferkit.runtime.model",
    "Detection": "ferkit.runtime.detectors",
    "get_detector": "ferkit.runtime.detectors",
    "CenterFaceDetector": "ferkit.runtime.detectors",
    "HaarDetector": "ferkit.runtime.detectors",
    "crop_face": "ferkit.runtime.align",
    "draw_results": "ferkit.runtime.draw",
    "probability_chart": "ferkit.runtime.charts",
    "timeline_chart": "ferkit.runtime.charts",
    "process_video": "ferkit.runtime.video",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ferkit.runtime' has no attribute {name!r}")
