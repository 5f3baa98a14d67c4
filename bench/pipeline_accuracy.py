"""Pipeline accuracy: what detection + cropping cost compared with classifying FER2013's own crops.

FER2013 faces (48x48) are upscaled (96-176 px, bicubic) and pasted four to a 640x480 frame over real
textures (scikit-image's brick, grass, gravel). Each frame goes through detection -> framing
(`ferkit.runtime.align`) -> the shared preprocessing -> the model. We report, per detector:

- detection rate: pasted faces with a detection overlapping them (IoU >= 0.4);
- accuracy of the raw 48x48 crops (the model's own test accuracy) and of the pipeline, over all
  faces (a miss counts as wrong) and over the detected faces only;
- accuracy lost to framing: raw-crop accuracy minus pipeline accuracy on the same detected faces,
  for the calibrated framing and for the alternatives (eyes not levelled; the bare detector box).

`--calibrate` fits the framing instead (on PublicTest, never on the test split): for every detected
face, the square that reproduces the original crop relative to the detector's box; the medians are
the numbers in `ferkit/runtime/align.py`.

    python bench/pipeline_accuracy.py                      # PrivateTest, every detector (YuNet, CenterFace, Haar)
    python bench/pipeline_accuracy.py --calibrate          # PublicTest, prints framing parameters
    python bench/pipeline_accuracy.py --limit 400          # a quick look
    python bench/pipeline_accuracy.py --calibrated-only    # the detectors compared, without the framing alternatives
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import replace

import cv2
import numpy as np

from ferkit.data import default_data_dir, load_dataset
from ferkit.runtime.align import FRAMINGS, Framing, crop_face
from ferkit.runtime.detectors import get_detector

FRAME_W, FRAME_H = 640, 480


def backgrounds() -> list[np.ndarray]:
    from skimage import data

    out = []
    for name in ("brick", "grass", "gravel"):
        img = getattr(data, name)()
        img = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        out.append(cv2.resize(img, (FRAME_W, FRAME_H), interpolation=cv2.INTER_LINEAR))
    return out


def compose(faces: np.ndarray, seed: int = 0, per_frame: int = 4, size=(96, 176)):
    """Yield (frame BGR, [(face index, (x, y, side))]) with up to 4 faces per 640x480 frame."""
    rng = np.random.default_rng(seed)
    bgs = backgrounds()
    cells = [(0, 0), (320, 0), (0, 240), (320, 240)][:per_frame]
    for start in range(0, len(faces), per_frame):
        frame = bgs[rng.integers(len(bgs))].copy()
        placed = []
        for (cx, cy), i in zip(cells, range(start, min(start + per_frame, len(faces)))):
            s = int(rng.integers(size[0], size[1] + 1))
            x = cx + int(rng.integers(0, 320 - s + 1))
            y = cy + int(rng.integers(0, 240 - s + 1))
            frame[y:y + s, x:x + s] = cv2.resize(faces[i], (s, s), interpolation=cv2.INTER_CUBIC)
            placed.append((i, (x, y, s)))
        yield cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR), placed


def predict_labels(model, faces: np.ndarray, batch: int = 128) -> np.ndarray:
    """Argmax labels in batches: one call on thousands of faces at 16-view TTA would hold gigabytes."""
    out = [model.predict_proba(faces[i:i + batch]).argmax(1) for i in range(0, len(faces), batch)]
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / max((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter, 1e-9)


def run_detector(detector, faces, seed, limit_frames=None):
    """-> list of (face index, gt square, best matching Detection or None, frame) per pasted face."""
    results, frames, t0 = [], 0, time.perf_counter()
    for frame, placed in compose(faces, seed):
        dets = detector.detect(frame)
        for i, (x, y, s) in placed:
            gt = (x, y, x + s, y + s)
            best = max(((iou(d.box, gt), d) for d in dets), key=lambda t: t[0], default=(0.0, None))
            results.append((i, (x, y, s), best[1] if best[0] >= 0.4 else None, frame))
        frames += 1
        if limit_frames and frames >= limit_frames:
            break
    return results, frames / (time.perf_counter() - t0)


def calibrate(name: str, matched) -> None:
    scales, dxs, dys, angles = [], [], [], []
    for _, (x, y, s), det, _ in matched:
        if det is None:
            continue
        x1, y1, x2, y2 = det.box
        base = math.sqrt((x2 - x1) * (y2 - y1))
        scales.append(s / base)
        dxs.append((x + s / 2 - (x1 + x2) / 2) / base)
        dys.append((y + s / 2 - (y1 + y2) / 2) / base)
        if det.landmarks is not None:
            from ferkit.runtime.align import eye_angle

            angles.append(eye_angle(det.landmarks))
    q = lambda v: np.percentile(v, [25, 50, 75])  # noqa: E731
    print(f"\n{name}: {len(scales)} faces detected of {len(matched)}")
    for label, v in (("scale", scales), ("dx", dxs), ("dy", dys), ("eye roll (deg)", angles)):
        if v:
            lo, med, hi = q(v)
            print(f"  {label:15s} median {med:+.3f}   IQR {lo:+.3f} .. {hi:+.3f}")
    print(f"  -> Framing(scale={np.median(scales):.2f}, dx={np.median(dxs):.2f}, dy={np.median(dys):.2f})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(default_data_dir()))
    ap.add_argument("--split", default=None, help="default: PrivateTest (PublicTest with --calibrate)")
    ap.add_argument("--model", default=None, help="ONNX model (default: the shipped fer2013-7)")
    ap.add_argument("--detectors", default="yunet,centerface,haar")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N faces")
    ap.add_argument("--calibrate", action="store_true", help="fit the framing on PublicTest and print it")
    ap.add_argument("--calibrated-only", action="store_true", help="score only the calibrated framing (6x fewer model runs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--detect-size", type=int, default=640, help="long side the detector sees (frames are 640x480)")
    args = ap.parse_args(argv)

    split = args.split or ("PublicTest" if args.calibrate else "PrivateTest")
    faces = load_dataset(args.data).split(split)
    if args.limit:
        faces = faces.subset(np.arange(len(faces)) < args.limit)
    print(f"{split}: {len(faces)} faces, pasted 4 per {FRAME_W}x{FRAME_H} frame at 96-176 px; detection at {args.detect_size} px")

    model = raw_correct = None
    if not args.calibrate:
        from ferkit.runtime.model import FacialExpressionModel

        model = FacialExpressionModel(args.model)
        raw_pred = predict_labels(model, faces.images)
        raw_correct = raw_pred == faces.labels
        print(f"model {model.path.name} (tta={model.tta}); raw 48x48 crops: accuracy {raw_correct.mean():.2%}")

    rows = []
    for name in args.detectors.split(","):
        detector = get_detector(name, max_side=args.detect_size)
        matched, fps = run_detector(detector, faces.images, args.seed)
        if args.calibrate:
            calibrate(name, matched)
            continue
        det_idx = np.array([i for i, _, d, _ in matched if d is not None], dtype=np.int64)
        rate = len(det_idx) / len(matched)
        framing = FRAMINGS[name]
        variants = {"calibrated": framing}
        if not args.calibrated_only:
            if framing.level_eyes:
                variants["eyes not levelled"] = replace(framing, level_eyes=False)
                variants["eyes at FER's median roll (-2.4 deg)"] = replace(framing, roll=-2.4)
            variants["scale x0.9"] = replace(framing, scale=framing.scale * 0.9)
            variants["scale x1.1"] = replace(framing, scale=framing.scale * 1.1)
            variants["bare box (scale 1)"] = Framing(1.0, 0.0, 0.0, level_eyes=False)
        for vname, fr in variants.items():
            crops = np.stack([crop_face(frame, d, fr) for _, _, d, frame in matched if d is not None]) \
                if len(det_idx) else np.zeros((0, 48, 48), np.uint8)
            pred = predict_labels(model, crops)
            ok = pred == faces.labels[det_idx]
            rows.append((name, vname, rate, raw_correct[det_idx].mean(), ok.mean(), ok.sum() / len(matched),
                         raw_correct[det_idx].mean() - ok.mean(), fps))
    if args.calibrate:
        return 0
    print()
    head = ("detector", "framing", "detected", "raw acc (det.)", "pipeline (det.)", "pipeline (all)", "lost", "frames/s")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name, vname, rate, raw, pipe, pipe_all, lost, fps in rows:
        print(f"| {name} | {vname} | {rate:.1%} | {raw:.2%} | {pipe:.2%} | {pipe_all:.2%} | {lost * 100:+.2f} pt | {fps:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
