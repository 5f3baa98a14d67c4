"""Results as pandas DataFrames, for notebooks and analysis (pandas is the optional `pandas` extra, imported here only).

    import ferkit
    from ferkit.runtime.tables import results_to_frame, video_report_to_frame

    results_to_frame(ferkit.analyze("photo.jpg"))         # one row per face: box, score, label, probabilities
    video_report_to_frame(process_video("clip.mp4"))      # one row per face per analysed frame, as the CSV
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ferkit.errors import require_extra


def _pandas():
    require_extra("pandas", "a DataFrame of results", "pandas")
    import pandas as pd

    return pd


def _face_row(face: Any) -> dict[str, Any]:
    d = face.to_dict() if hasattr(face, "to_dict") else dict(face)  # a FaceResult or its to_dict()
    x1, y1, x2, y2 = d["box"]
    row = {"x1": x1, "y1": y1, "x2": x2, "y2": y2, "score": d["score"], "label": d["label"],
           "confidence": d.get("confidence", d["probabilities"][d["label"]])}
    if d.get("track_id") is not None:
        row["track_id"] = d["track_id"]
    row.update(d["probabilities"])
    return row


def results_to_frame(faces: Iterable[Any] | Mapping[str, Iterable[Any]]):
    """Faces -> a DataFrame, one row per face: x1, y1, x2, y2, score, label, confidence, then one column per class.

    `faces`: what `ferkit.analyze` returns (FaceResult objects or their `to_dict()`), or a mapping
    {image name: faces} for several images, which adds an `image` column first. Faces are numbered from 1
    in a `face` column (per image), in the order given (reading order for `analyze`).
    """
    pd = _pandas()
    rows = []
    groups = faces.items() if isinstance(faces, Mapping) else [(None, faces)]
    for image, group in groups:
        for i, face in enumerate(group, start=1):
            rows.append({**({"image": str(image)} if image is not None else {}), "face": i, **_face_row(face)})
    cols = (["image"] if isinstance(faces, Mapping) else []) + ["face", "x1", "y1", "x2", "y2", "score", "label", "confidence"]
    frame = pd.DataFrame(rows)
    return frame if rows else pd.DataFrame(columns=cols)


def video_report_to_frame(report: Any):
    """A video's per-frame results (the CSV `process_video` / `ferkit video` writes) -> a DataFrame.

    `report`: a `VideoReport`, its `to_dict()`, or the CSV's path. Columns: frame, time_s, face (the
    track number), x1, y1, x2, y2, score, label and confidence (smoothed over the track), raw_label
    (this frame's own), then one column per class (smoothed probabilities); one row per face per analysed frame.
    """
    pd = _pandas()
    if isinstance(report, (str, Path)):
        path = Path(report)
    elif isinstance(report, Mapping):
        path = Path(report["csv"])
    else:
        path = Path(report.csv)
    return pd.read_csv(path)
