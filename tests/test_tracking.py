"""Tracking faces from frame to frame (ferkit.runtime.tracking), on real frames of two moving faces."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from _runtime_media import two_faces_frame, write_video

from ferkit.runtime import tracking, video, webcam
from ferkit.runtime.pipeline import Analyzer, FaceResult
from ferkit.runtime.tracking import FaceTracker, box_iou, live_frames


@pytest.fixture(scope="module")
def analyzer() -> Analyzer:
    return Analyzer(detector="haar", live=True)


def test_box_iou_one_box_and_many():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert box_iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0  # no area, no division by zero
    many = box_iou((0, 0, 10, 10), np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]]))
    np.testing.assert_allclose(many, [1.0, 50 / 150, 0.0])


def test_one_tracker_for_every_live_path():
    """Video files and the webcam window use the tracking module's own tracker and loop."""
    assert video.FaceTracker is tracking.FaceTracker and webcam.live_frames is tracking.live_frames


def _face(box, label, classes, p=0.9) -> FaceResult:
    probs = {c: (p if c == label else (1 - p) / (len(classes) - 1)) for c in classes}
    return FaceResult(box=box, score=1.0, label=label, probabilities=probs)


def test_tracker_keeps_ids_and_smooths_labels():
    classes = ("happy", "sad", "neutral")
    t = FaceTracker(classes, alpha=0.4)
    first = t.update([_face((0, 0, 100, 100), "happy", classes), _face((300, 0, 400, 100), "sad", classes)], 0)
    assert [f.track_id for f in first] == [1, 2] and [f.raw_label for f in first] == ["happy", "sad"]
    # next frame: both moved a little, face 1 looks sad for one frame -- smoothing keeps it happy
    second = t.update([_face((305, 2, 405, 102), "sad", classes), _face((4, 0, 104, 100), "sad", classes)], 1)
    assert [f.track_id for f in second] == [2, 1]
    assert second[1].label == "happy" and second[1].raw_label == "sad"
    assert second[1].probabilities["happy"] == pytest.approx(0.4 * 0.05 + 0.6 * 0.9)
    # a face far from every track starts a new one; tracks unseen for longer than max_age are dropped
    t.max_age = 2
    third = t.update([_face((600, 300, 700, 400), "neutral", classes)], 5)
    assert third[0].track_id == 3 and set(t.tracks) == {3}


def test_live_frames_on_a_real_video(analyzer, tmp_path):
    clip = write_video(tmp_path / "two.mp4", n=12, fps=12)
    cap = cv2.VideoCapture(str(clip))
    try:
        out = list(live_frames(cap, analyzer, every=2, max_frames=8))
    finally:
        cap.release()
    assert len(out) == 8
    img, faces, fps = out[-1]
    assert img.shape == (480, 640, 3) and fps > 0
    assert not np.array_equal(img, two_faces_frame(7 / 11))  # boxes and FPS drawn on it
    assert sorted(f.track_id for f in faces) == [1, 2]  # the same two faces all along
    assert all(f.raw_label in analyzer.classes for f in faces)
