"""Every run-time command, run as a user runs it (`ferkit …` in a subprocess), on real photos and a real video."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from _runtime_media import astronaut_bgr, encode, exif_rotated_jpeg, overlaps, truncated_copy, write_video

FERKIT = Path(sys.executable).with_name("ferkit")


def ferkit(*args, cwd=None, env=None, timeout=240) -> subprocess.CompletedProcess:
    cmd = [str(FERKIT)] if FERKIT.exists() else [sys.executable, "-m", "ferkit.apps.cli"]
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=full_env, timeout=timeout)


def no_traceback(r: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in r.stderr + r.stdout, r.stderr


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """A folder of real photos in every awkward form, plus bad files."""
    d = tmp_path_factory.mktemp("photos")
    a = astronaut_bgr()
    (d / "good").mkdir()
    cv2.imwrite(str(d / "good" / "astronaut.png"), a)
    (d / "good" / "exif_rotated.jpg").write_bytes(exif_rotated_jpeg(a))
    (d / "good" / "deep16.png").write_bytes(encode(a.astype(np.uint16) * 257, ".png"))
    (d / "good" / "rgba.png").write_bytes(encode(cv2.cvtColor(a, cv2.COLOR_BGR2BGRA), ".png"))
    (d / "good" / "grey.jpg").write_bytes(encode(cv2.cvtColor(a, cv2.COLOR_BGR2GRAY), ".jpg"))
    (d / "good" / "huge.jpg").write_bytes(encode(cv2.resize(a, (6000, 6000)), ".jpg", IMWRITE_JPEG_QUALITY=80))  # 36 MP
    (d / "good" / "notes.txt").write_text("not an image, and not named like one: skipped in folders")
    (d / "bad").mkdir()
    (d / "bad" / "empty.jpg").write_bytes(b"")
    jpg = encode(a, ".jpg")
    (d / "bad" / "truncated.jpg").write_bytes(jpg[: len(jpg) // 2])
    (d / "bad" / "text.png").write_text("hello, I am text with an image name\n")
    cv2.imwrite(str(d / "bad" / "no_face.png"), cv2.resize(a[300:, 380:], (300, 200)))  # the helmet only
    return d


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("video")
    return write_video(d / "two_astronauts.mp4", n=30, fps=15)


def test_demo(tmp_path):
    r = ferkit("demo", "-o", tmp_path / "demo")
    assert r.returncode == 0, r.stderr
    no_traceback(r)
    assert "astronaut." in r.stdout and "face 1:" in r.stdout  # the bundled photo, by name
    info = json.loads((tmp_path / "demo" / "astronaut.json").read_text())
    assert len(info["faces"]) == 1 and overlaps(info["faces"][0]["box"])
    annotated = cv2.imread(str(tmp_path / "demo" / "astronaut.annotated.png"))
    assert annotated.shape == (512, 512, 3) and np.abs(annotated.astype(int) - astronaut_bgr()).sum() > 0
    assert cv2.imread(str(tmp_path / "demo" / "astronaut.chart.png")) is not None


def test_demo_says_happy(tmp_path):
    r = ferkit("demo", "-o", tmp_path / "demo", "--detector", "haar")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "demo" / "astronaut.json").read_text())["faces"][0]["label"] == "happy"


def test_predict_folder_of_awkward_but_valid_photos(photos, tmp_path):
    out = tmp_path / "out"
    r = ferkit("predict", photos / "good", "-o", out)
    assert r.returncode == 0, r.stderr + r.stdout
    no_traceback(r)
    res = json.loads((out / "results.json").read_text())
    by_name = {Path(rec["file"]).name: rec for rec in res["images"]}
    assert set(by_name) == {"astronaut.png", "exif_rotated.jpg", "deep16.png", "rgba.png", "grey.jpg", "huge.jpg"}
    for name, rec in by_name.items():
        assert rec["error"] is None and len(rec["faces"]) == 1, name
        scale = rec["width"] / 512
        assert overlaps([v / scale for v in rec["faces"][0]["box"]], min_iou=0.3), name
        assert Path(rec["annotated"]).is_file()
    assert by_name["exif_rotated.jpg"]["width"] == 512  # decoded upright
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 6 and all(r["label"] in res["classes"] for r in rows)


def test_predict_batch_goes_on_past_bad_files(photos, tmp_path):
    out = tmp_path / "out"
    r = ferkit("predict", photos / "good" / "astronaut.png", photos / "bad", "-o", out)
    assert r.returncode == 1
    no_traceback(r)
    err = " ".join(r.stderr.split())
    for name, why in (("empty.jpg", "empty file"), ("truncated.jpg", "not a readable image"),
                      ("text.png", "not a readable image"), ("no_face.png", "no face found")):
        assert name in err and why in err, (name, err)
    assert "4 of 5 image(s) failed" in err
    res = json.loads((out / "results.json").read_text())
    assert len(res["images"]) == 5
    ok = [rec for rec in res["images"] if rec["error"] is None]
    assert len(ok) == 1 and ok[0]["file"].endswith("astronaut.png") and len(ok[0]["faces"]) == 1
    assert (out / "astronaut.annotated.png").is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_predict_missing_or_special_paths_stop_before_any_work(photos, tmp_path):
    """A path given that does not exist, or is a FIFO, is a usage error: one line, exit 2, nothing written."""
    import os

    out = tmp_path / "out"
    r = ferkit("predict", "nosuch.jpg", "-o", out, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip() == "error: nosuch.jpg: no such file or folder", r.stderr
    assert "wrote" not in r.stdout and not out.exists()
    r = ferkit("predict", photos / "good" / "astronaut.png", tmp_path / "missing.jpg", "-o", out)
    assert r.returncode == 2 and "missing.jpg: no such file" in r.stderr and not out.exists()
    os.mkfifo(tmp_path / "pipe.jpg")  # nothing writes to it: reading it would block forever
    for cmd in (["predict", tmp_path / "pipe.jpg", "-o", out], ["chart", tmp_path / "pipe.jpg", "-o", out / "c.png"]):
        r = ferkit(*cmd, timeout=120)
        assert r.returncode == 2 and "pipe.jpg: not a regular file (a FIFO)" in r.stderr, r.stderr
        no_traceback(r)
        assert not out.exists()


def test_predict_names_every_file_it_skips_in_a_folder(tmp_path):
    """In a folder, images in any format OpenCV or Pillow reads are analysed (AVIF, a float TIFF, 16-bit
    PNG, Radiance HDR); a file that only has an image's name fails by name; anything else is listed as skipped."""
    import os

    from PIL import Image

    a = astronaut_bgr()
    d = tmp_path / "mixed"
    d.mkdir()
    Image.fromarray(cv2.cvtColor(a, cv2.COLOR_BGR2RGB)).save(d / "photo.avif")
    (d / "float.tif").write_bytes(encode(a.astype(np.float32) / 255, ".tiff"))  # values 0..1
    (d / "radiance.hdr").write_bytes(encode(a.astype(np.float32) / 255, ".hdr"))
    (d / "notes.txt").write_text("hello")
    (d / "broken.hdr").write_bytes(b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 4 +X 4\n")  # no pixels
    os.mkfifo(d / "pipe.png")
    out = tmp_path / "out"
    r = ferkit("predict", d, "-o", out, "--no-images", timeout=240)
    no_traceback(r)
    assert r.returncode == 1, r.stderr
    err = r.stderr
    assert f"skipped {d / 'notes.txt'}: not named like an image (.txt)" in err, err
    assert f"skipped {d / 'pipe.png'}: not a regular file (a FIFO)" in err, err
    assert "broken.hdr: not a readable image" in err and "1 of 4 image(s) failed" in err, err
    res = json.loads((out / "results.json").read_text())
    by_name = {Path(rec["file"]).name: rec for rec in res["images"]}
    for name in ("photo.avif", "float.tif", "radiance.hdr"):
        assert by_name[name]["error"] is None and len(by_name[name]["faces"]) == 1, (name, by_name[name])
        assert overlaps(by_name[name]["faces"][0]["box"]), name
    assert {Path(s["file"]).name for s in res["skipped"]} == {"notes.txt", "pipe.png"}


def test_float_tiff_gives_the_same_face_as_the_png(photos, tmp_path):
    """A float32 TIFF with values 0..1 is the same photo, not a black one."""
    a = astronaut_bgr()
    tif = tmp_path / "astronaut_float.tif"
    tif.write_bytes(encode(a.astype(np.float32) / 255, ".tiff"))
    probs = {}
    for src in (photos / "good" / "astronaut.png", tif):
        out = tmp_path / src.stem
        r = ferkit("predict", src, "-o", out, "--no-images")
        assert r.returncode == 0, r.stderr
        (face,) = json.loads((out / "results.json").read_text())["images"][0]["faces"]
        probs[src.suffix] = face
    assert probs[".tif"]["label"] == probs[".png"]["label"]
    assert max(abs(probs[".tif"]["probabilities"][c] - probs[".png"]["probabilities"][c]) for c in probs[".png"]["probabilities"]) < 0.05


def test_predict_decompression_bomb_guard_and_bad_options(photos, tmp_path):
    r = ferkit("predict", photos / "good" / "huge.jpg", "-o", tmp_path, env={"FERKIT_MAX_PIXELS": "10000000"})
    assert r.returncode == 1 and "huge.jpg: 6000x6000 pixels is over the limit" in " ".join(r.stderr.split())
    r = ferkit("predict", photos / "good" / "astronaut.png", "--model", tmp_path / "nope.onnx")
    assert r.returncode == 2 and "nope.onnx: no such model file" in " ".join(r.stderr.split())
    no_traceback(r)
    r = ferkit("predict", photos / "good" / "astronaut.png", "--detector", "yolo")
    assert r.returncode == 2 and "unknown detector 'yolo'" in r.stderr
    no_traceback(r)
    r = ferkit("predict", photos / "good" / "astronaut.png", "-o", tmp_path / "x", env={"FERKIT_MAX_PIXELS": "lots"})
    assert r.returncode == 2 and "FERKIT_MAX_PIXELS='lots': must be a whole number" in r.stderr, r.stderr
    no_traceback(r)
    for option, value, why in (("--min-score", "1.5", "--min-score must be between 0 and 1"),
                               ("--detect-size", "-5", "--detect-size must be 0 (the full image) or at least 32")):
        r = ferkit("predict", photos / "good" / "astronaut.png", option, value, "-o", tmp_path / "x")
        assert r.returncode == 2 and why in r.stderr and not (tmp_path / "x").exists(), r.stderr
        no_traceback(r)


def test_predict_tta_switch(photos, tmp_path):
    """--tta overrides the card: each mode gives different probabilities for the same face, and the
    card's own choice is what you get without the option."""
    from ferkit.modelcard import RUNTIME_TTA, ModelCard
    from ferkit.runtime.model import DEFAULT_MODEL, WEIGHTS_DIR

    probs = {}
    for mode in (*RUNTIME_TTA, None):
        out = tmp_path / str(mode)
        r = ferkit("predict", photos / "good" / "astronaut.png", "-o", out, "--no-images",
                   *(["--tta", mode] if mode else []))
        assert r.returncode == 0, r.stderr
        probs[mode] = json.loads((out / "results.json").read_text())["images"][0]["faces"][0]["probabilities"]
    for m in RUNTIME_TTA[1:]:
        assert max(abs(probs["none"][c] - probs[m][c]) for c in probs["none"]) > 1e-4, m
    assert probs[None] == probs[ModelCard.load(WEIGHTS_DIR / f"{DEFAULT_MODEL}.json").tta]
    r = ferkit("predict", photos / "good" / "astronaut.png", "--tta", "ten-crop")
    assert r.returncode == 2 and "--tta 'ten-crop'" in r.stderr
    no_traceback(r)


def test_model_tiers(photos, tmp_path):
    """`--model fast` runs the one-view fast tier, `--model accurate` the default, `--model robust` the
    camera-fault-trained net: all find the astronaut's face in the same place, each results file names the
    model that ran."""
    faces = {}
    for tier, name in (("fast", "fer2013-7-fast"), ("accurate", "fer2013-7"), ("robust", "fer2013-7-robust")):
        out = tmp_path / tier
        r = ferkit("predict", photos / "good" / "astronaut.png", "-o", out, "--no-images", "--model", tier)
        assert r.returncode == 0, r.stderr
        results = json.loads((out / "results.json").read_text())
        assert results["model"] == name and results["model_file"].endswith(".onnx")
        faces[tier] = results["images"][0]["faces"]
    assert len(faces["fast"]) == len(faces["accurate"]) == len(faces["robust"]) == 1
    assert faces["fast"][0]["box"] == faces["accurate"][0]["box"] == faces["robust"][0]["box"]
    assert faces["fast"][0]["probabilities"] != faces["accurate"][0]["probabilities"]
    assert faces["robust"][0]["probabilities"] != faces["accurate"][0]["probabilities"]


def test_chart(photos, tmp_path):
    r = ferkit("chart", photos / "good" / "astronaut.png", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    chart = cv2.imread(str(tmp_path / "astronaut.chart.png"))
    assert chart is not None and chart.shape[1] > 400
    r = ferkit("chart", photos / "bad" / "no_face.png", "-o", tmp_path / "x.png")
    assert r.returncode == 1 and "no_face.png: no face found" in " ".join(r.stderr.split())
    r = ferkit("chart", photos / "bad" / "truncated.jpg")
    assert r.returncode == 2 and "truncated.jpg: not a readable image" in " ".join(r.stderr.split())
    no_traceback(r)


def _probe(path: Path) -> str:
    import imageio_ffmpeg

    r = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True)
    return r.stderr


def test_video(clip, tmp_path):
    out = tmp_path / "out"
    r = ferkit("video", clip, "-o", out)
    assert r.returncode == 0, r.stderr
    no_traceback(r)
    assert "frame" in r.stderr  # the tqdm progress bar
    video, table, plot = out / "two_astronauts.annotated.mp4", out / "two_astronauts.csv", out / "two_astronauts.emotions.png"
    assert "Video: h264" in _probe(video)  # H.264 in MP4: what every browser plays
    cap = cv2.VideoCapture(str(video))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 30
    rows = list(csv.DictReader(table.open()))
    assert {r["frame"] for r in rows} == {str(i) for i in range(30)}
    assert {r["face"] for r in rows} == {"1", "2"}  # two faces, each tracked through the clip
    probs = np.array([[float(r[c]) for c in ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")] for r in rows])
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=2e-3)
    assert cv2.imread(str(plot)) is not None


def test_video_every_n_to_webm(clip, tmp_path):
    r = ferkit("video", clip, "-o", tmp_path / "clip.webm", "--every", "3", "--detector", "haar")
    assert r.returncode == 0, r.stderr
    assert "Video: vp9" in _probe(tmp_path / "clip.webm")
    frames = {int(r["frame"]) for r in csv.DictReader((tmp_path / "clip.csv").open())}
    assert frames == set(range(0, 30, 3))
    assert (tmp_path / "clip.emotions.png").is_file()


def test_video_keeps_the_sound(clip, tmp_path):
    import imageio_ffmpeg

    sound = tmp_path / "with_sound.mp4"  # the clip plus a 440 Hz tone, muxed by ffmpeg itself
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-i", str(clip), "-f", "lavfi", "-i",
                    "sine=frequency=440:duration=10", "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac",
                    "-shortest", str(sound)], check=True)
    assert "Audio: aac" in _probe(sound)
    for out, codec in ((tmp_path / "a.mp4", "Audio: aac"), (tmp_path / "a.webm", "Audio: opus")):
        r = ferkit("video", sound, "-o", out, "--every", "5")
        assert r.returncode == 0 and "silent" not in r.stderr, r.stderr
        info = _probe(out)
        assert codec in info and ("Video: h264" in info or "Video: vp9" in info), info
        cap = cv2.VideoCapture(str(out))
        n = 0
        while cap.read()[0]:
            n += 1
        assert n == 30  # muxing the sound kept every frame
    r = ferkit("video", sound, "-o", tmp_path / "quiet.mp4", "--every", "5", "--no-audio")
    assert r.returncode == 0 and "Audio:" not in _probe(tmp_path / "quiet.mp4")


def test_video_frame_limits_and_sizes(clip, tmp_path):
    """--max-frames must be 1 or more (0 or -5 is refused, not read as 'all' or 'one'); frames above
    --max-pixels are refused before any is decoded; nothing is written either way."""
    for value in ("0", "-5"):
        r = ferkit("video", clip, "-o", tmp_path / "x", "--max-frames", value)
        assert r.returncode == 2 and f"--max-frames must be 1 or more, not {value}" in r.stderr, r.stderr
        no_traceback(r)
    r = ferkit("video", clip, "-o", tmp_path / "x", "--max-pixels", "100000")
    assert r.returncode == 2 and "two_astronauts.mp4: 640x480 frames are over the limit of 100,000 pixels" in r.stderr
    assert not (tmp_path / "x").exists()
    r = ferkit("video", clip, "-o", tmp_path / "three", "--max-frames", "3", "--detector", "haar", "--no-audio")
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader((tmp_path / "three" / "two_astronauts.csv").open()))
    assert {r["frame"] for r in rows} == {"0", "1", "2"}
    assert sorted(p.name for p in (tmp_path / "three").iterdir()) == [
        "two_astronauts.annotated.mp4", "two_astronauts.csv", "two_astronauts.emotions.png"]


def test_bad_videos(clip, tmp_path):
    avi = write_video(tmp_path / "clip.avi", n=30, fps=15, fourcc="MJPG")
    cut = truncated_copy(avi, tmp_path / "cut.avi", 0.5)
    r = ferkit("video", cut, "-o", tmp_path / "cut_out")
    assert r.returncode == 1
    err = " ".join(r.stderr.split())
    assert "cut.avi: ended early" in err and "of the 30 frames" in err
    assert (tmp_path / "cut_out" / "cut.annotated.mp4").is_file() and (tmp_path / "cut_out" / "cut.csv").is_file()
    bad = {"cut.mp4": truncated_copy(clip, tmp_path / "cut.mp4", 0.5), "empty.mp4": tmp_path / "empty.mp4",
           "text.mp4": tmp_path / "text.mp4", "missing.mp4": tmp_path / "missing.mp4"}
    bad["empty.mp4"].write_bytes(b"")
    bad["text.mp4"].write_text("not a video")
    for name, path in bad.items():
        r = ferkit("video", path, "-o", tmp_path / "x")
        assert r.returncode == 2 and name in r.stderr, (name, r.stderr)
        no_traceback(r)


def test_webcam_without_display_points_at_serve(clip):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    r = subprocess.run([str(FERKIT), "webcam", "--source", str(clip)], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 2
    assert "no display" in r.stderr and "ferkit serve" in r.stderr
    no_traceback(r)
    r = subprocess.run([str(FERKIT), "webcam", "--source", str(clip), "--max-frames", "0"], capture_output=True,
                       text=True, env=env, timeout=60)
    assert r.returncode == 2 and "--max-frames must be 1 or more, not 0" in r.stderr, r.stderr


@pytest.mark.skipif(shutil.which("Xvfb") is None, reason="Xvfb not installed (apt-get install xvfb)")
def test_webcam_window_under_xvfb(clip, tmp_path):
    xvfb = subprocess.Popen(["Xvfb", ":97", "-screen", "0", "800x600x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        r = ferkit("webcam", "--source", clip, "--max-frames", "12", env={"DISPLAY": ":97"}, timeout=120)
        assert r.returncode == 0, r.stderr
        assert "showed 12 frames" in r.stdout
        r = ferkit("webcam", "--source", tmp_path / "nope.mp4", env={"DISPLAY": ":97"})
        assert r.returncode == 2 and "nope.mp4: no such video file" in " ".join(r.stderr.split())
        os.mkfifo(tmp_path / "pipe.mp4")  # a FIFO never ends: refused before it is opened
        r = ferkit("webcam", "--source", tmp_path / "pipe.mp4", env={"DISPLAY": ":97"}, timeout=120)
        assert r.returncode == 2 and "pipe.mp4: not a regular file (a FIFO)" in r.stderr, r.stderr
    finally:
        xvfb.terminate()
        xvfb.wait(10)
