"""Run-time speed: classifier faces/s, and end-to-end frames/s on 640x480 video with one and four faces.

End to end = decode the frame from a video file + detect + frame/crop + classify + smooth/track +
draw the boxes and labels: everything `ferkit webcam` does per frame except showing the window.
`ferkit video` adds H.264 encoding, reported separately.

Reference: the `fer` package's own pipeline (Haar cascade + mini-Xception, Keras) runs at 15.7 FPS on
a 640x480 frame with one face on this 2-core machine (an earlier measurement; not re-measured
here, `fer` is not installed). Required: >= 30 FPS with one face; goal: 3x fer, ~47 FPS.

    python bench/runtime_speed.py                  # default model, every detector (YuNet, CenterFace, Haar)
    python bench/runtime_speed.py --frames 100 --detect-sizes 640,480,320
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

FER_PACKAGE_FPS = 15.7


def head() -> np.ndarray:
    from ferkit.assets import demo_photo

    a = cv2.imread(str(demo_photo()))  # the bundled astronaut portrait, 512x512
    return a[0:300, 100:360]  # head and shoulders, 260x300


def frame_at(t: float, faces: int) -> np.ndarray:
    frame = np.full((480, 640, 3), (150, 160, 170), np.uint8)
    h = head()
    if faces == 1:
        big = cv2.resize(h, (234, 270))
        x = 120 + int(200 * t)
        frame[100:370, x:x + 234] = big
    else:
        small = cv2.resize(h, (156, 180))
        for i, (x, y) in enumerate(((40, 20), (360, 30), (60, 260), (380, 270))):
            dx = int(60 * t) * (1 if i % 2 == 0 else -1)
            frame[y:y + 180, x + dx:x + dx + 156] = small if i % 2 == 0 else small[:, ::-1]
    return frame


def make_video(path: Path, faces: int, n: int) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (640, 480))
    for i in range(n):
        w.write(frame_at(i / max(1, n - 1), faces))
    w.release()
    return path


def classifier_speed(model, seconds: float = 3.0) -> tuple[float, float]:
    faces = np.random.default_rng(0).integers(0, 256, (64, 48, 48), dtype=np.uint8)
    model.predict_proba(faces[:1])
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds / 2:
        model.predict_proba(faces[n % 64: n % 64 + 1])
        n += 1
    single = n / (time.perf_counter() - t0)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds / 2:
        model.predict_proba(faces)
        n += 64
    return single, n / (time.perf_counter() - t0)


def end_to_end(video: Path, analyzer, frames: int, batch: int = 1) -> tuple[float, float, int]:
    """(wall-clock FPS, CPU-time FPS, faces found). CPU-time FPS = frames per CPU-second of this process:
    with one thread it is what an idle core would do, however busy the machine is. `batch`: consecutive
    frames whose faces share one classifier run (`Analyzer.analyze_many`); 1 = frame by frame."""
    from ferkit.runtime.draw import draw_fps, draw_results
    from ferkit.runtime.tracking import FaceTracker

    tracker = FaceTracker(analyzer.classes)
    cap = cv2.VideoCapture(str(video))
    ok, frame = cap.read()
    analyzer.analyze(frame)  # warm up
    n = found = 0
    t0, c0 = time.perf_counter(), time.process_time()
    while n < frames:
        group = []
        while len(group) < min(batch, frames - n):
            ok, frame = cap.read()
            if not ok:
                cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                continue
            group.append(frame)
        for frame, results in zip(group, analyzer.analyze_many(group)):
            faces = tracker.update(results, n)
            draw_fps(draw_results(frame, faces), 0.0)
            found += len(faces)
            n += 1
    cap.release()
    return n / (time.perf_counter() - t0), n / (time.process_time() - c0), found


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--detectors", default="yunet,centerface,haar")
    ap.add_argument("--detect-sizes", default="640,320", help="long side the detector sees, comma-separated")
    ap.add_argument("--frames", type=int, default=120, help="frames per end-to-end measurement")
    ap.add_argument("--threads", type=int, default=None, help="onnxruntime threads (default: cores, at most 4)")
    ap.add_argument("--tta", default=None, help="TTA for the classifier figures (default: the card's); the "
                    "end-to-end rows use what `ferkit webcam`/`video` use: the card's, at most flip")
    ap.add_argument("--frame-batches", default="1", help="consecutive frames per classifier run, comma-separated "
                    "(e.g. 1,8: the same rows with frame-by-frame runs and with the faces of 8 frames in one run)")
    ap.add_argument("--video-job", action="store_true", help="also time `process_video` (adds H.264 encoding)")
    args = ap.parse_args(argv)

    import onnxruntime

    from ferkit.preprocessing import tta_cost
    from ferkit.runtime.model import FacialExpressionModel
    from ferkit.runtime.pipeline import Analyzer
    from ferkit.runtime.session import default_threads

    model = FacialExpressionModel(args.model, threads=args.threads, tta=args.tta)
    single, batched = classifier_speed(model)
    live_model = FacialExpressionModel(args.model, threads=args.threads, live=True)
    print(f"model {model.path.name} (tta={model.tta}), onnxruntime {onnxruntime.__version__}, "
          f"{args.threads or default_threads()} threads")
    print(f"\nclassifier: {single:,.0f} faces/s at batch 1, {batched:,.0f} faces/s at batch 64"
          + (f" (each face run {tta_cost(model.tta)} times: {model.tta} TTA)" if model.tta != "none" else ""))

    print(f"end to end (webcam/video paths): tta={live_model.tta}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        videos = {k: make_video(Path(tmp) / f"faces{k}.mp4", k, 90) for k in (1, 4)}
        for det in args.detectors.split(","):
            for size in (int(s) for s in args.detect_sizes.split(",")):
                analyzer = Analyzer(live_model, det, max_side=size, threads=args.threads)
                for k, video in videos.items():
                    for fb in (int(b) for b in args.frame_batches.split(",")):
                        fps, cpu_fps, found = end_to_end(video, analyzer, args.frames, fb)
                        rows.append((det, size, k, fb, fps, cpu_fps, found / args.frames))
                        print(f"  {det:10s} detect@{size:<4d} {k} face(s), {fb} frame(s) a run: {fps:6.1f} FPS wall, "
                              f"{cpu_fps:6.1f} per CPU-second, {found / args.frames:.2f} faces/frame found", flush=True)
        if args.video_job:
            from ferkit.runtime.video import process_video

            analyzer = Analyzer(live_model, "auto", max_side=int(args.detect_sizes.split(",")[0]), threads=args.threads)
            rep = process_video(videos[1], Path(tmp) / "out", analyzer=analyzer, max_frames=args.frames)
            print(f"\n`ferkit video` job (decode + analyse + draw + H.264 encode), 1 face: {rep.frames / rep.seconds:.1f} FPS")

    print("\n| detector | detect size | faces | frames a classifier run | end-to-end FPS (wall) | frames per CPU-second "
          "| vs `fer` (15.7 FPS) | faces found / frame |")
    print("|---|---|---|---|---|---|---|---|")
    for det, size, k, fb, fps, cpu_fps, found in rows:
        print(f"| {det} | {size} | {k} | {fb} | {fps:.1f} | {cpu_fps:.1f} | {fps / FER_PACKAGE_FPS:.1f}x | {found:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
