"""Classifier speed: faces/s of every shipped model, fp32 and int8, by TTA, batch size, threads and execution mode.

Each row times `FacialExpressionModel.predict_proba` (face crops in, averaged TTA probabilities out: view
building, normalising and the network runs) on batches of random 48x48 uint8 faces, going through
`--faces` faces (256) or until `--seconds` have passed (at least one batch), after one untimed warm-up
batch. Threads: `ort` is onnxruntime's own default (intra-op threads = physical cores), `ferkit` the
run time's (the cores this process may use, at most 4) for every call, a number, or `runtime`: the
sessions the run time itself makes (ferkit's threads, and one thread for calls of a face or two where
`ferkit.runtime.small_calls` measured that faster; sequential mode only). Mode: onnxruntime's sequential or
parallel execution mode. The PrivateTest accuracy column is the card's figure where the card has one at the
row's TTA and precision (its own TTA), else scored here after all the timings, as the run time runs that
model, precision and TTA (prior correction included; FER+ majority vote for 8 classes); `--no-score` leaves
those cells empty. A model is timed at no TTA costlier than its card's (the fast tier: one view).
The ratio column is faces/s against the reference row (`--reference`).

The `fer` package can be timed alongside through a Python that has it installed (`--fer-python
/tmp/fervenv/bin/python`; `pip install --no-deps fer` then `tensorflow-cpu "opencv-contrib-python<5" pandas
requests tqdm "moviepy<2" ffmpeg-python Pillow matplotlib "setuptools<81"`: its MTCNN extra would pull torch):
its default quantised TFLite model (one face an interpreter call, as the package runs it) and its Keras
mini-Xception (batched), on the same number of random 64x64 faces at batch 1 and 64, and their PrivateTest
accuracy measured here on the FER2013 faces with the package's own preprocessing.

    python bench/classifier_speed.py                           # the whole grid (a few minutes on an idle machine)
    python bench/classifier_speed.py --models fer2013-7 --ttas none --batches 1 --threads ferkit --seconds 0.2
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

FER_SCRIPT = r"""
import json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np
try:
    from fer.fer import FER
except ImportError:  # older releases export it at the top
    from fer import FER
faces, seconds, test = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
x = np.random.default_rng(0).uniform(-1, 1, (faces, 64, 64)).astype("float32")
data = np.load(test, allow_pickle=False)
# fer's own preprocessing of a grey face crop: resize to 64x64, scale to [-1, 1]
import cv2
t = np.stack([cv2.resize(f, (64, 64)) for f in data["images"]]).astype("float32") / 255.0 * 2 - 1
out = []
for tflite in (True, False):
    det = FER(use_tflite=tflite)
    if tflite:  # the package's default: a quantised TFLite model, one face an interpreter call
        run = det._classify_emotions
    else:       # its Keras mini-Xception, batched
        net = det._FER__emotion_classifier
        run = lambda b: np.asarray(net(b[..., None], training=False))
    pred = np.concatenate([np.asarray(run(t[i:i + 256])) for i in range(0, len(t), 256)]).argmax(1)
    acc = float((pred == data["labels"]).mean())
    for batch in (1, 64):
        run(x[:batch])
        done, t0 = 0, time.perf_counter()
        while done < faces and (done == 0 or time.perf_counter() - t0 < seconds):
            run(x[done:done + batch])
            done += len(x[done:done + batch])
        out.append({"tflite": tflite, "batch": batch, "faces_s": done / (time.perf_counter() - t0), "faces": done,
                    "accuracy": acc})
print(json.dumps(out))
"""


def parse_list(text: str, kind=str) -> list:
    return [kind(v.strip()) for v in text.split(",") if v.strip()]


def make_session(path, threads: str, mode: str):
    """A session as `ferkit.runtime.session.create_session` makes it, with the row's threads and mode."""
    import onnxruntime as ort

    from ferkit.runtime.session import default_threads

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 0 if threads == "ort" else default_threads() if threads == "ferkit" else int(threads)
    opts.execution_mode = ort.ExecutionMode.ORT_PARALLEL if mode == "parallel" else ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", os.environ.get("FERKIT_SPIN", "0"))
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def card_accuracy(model, precision: str, tta: str) -> str | None:
    """The card's PrivateTest accuracy at this TTA (fp32: its metrics; int8: its int8 block), if it has one;
    an int8 figure taken under another prior correction than the card's present one is marked so."""
    card = model.card
    m = card.int8.get("PrivateTest", {}) if precision == "int8" else card.metrics.get("PrivateTest", {})
    if m.get("tta") != tta or m.get("every", 1) != 1:
        return None
    tau = float((getattr(card, "prior_correction", None) or {}).get("tau", 0.0))
    other = precision == "int8" and float(card.int8.get("prior_tau", 0.0)) != tau
    return f"{m['accuracy']:.4f}" + (f" (prior tau {card.int8.get('prior_tau', 0.0):g}, card {tau:g})" if other else "")


def faces_per_second(model, faces: np.ndarray, batch: int, seconds: float) -> tuple[float, int]:
    model.predict_proba(faces[:batch])  # warm-up: first runs allocate
    done, t0 = 0, time.perf_counter()
    while done < len(faces) and (done == 0 or time.perf_counter() - t0 < seconds):
        model.predict_proba(faces[done:done + batch])
        done += len(faces[done:done + batch])
    return done / (time.perf_counter() - t0), done


def fer_rows(python: str, faces: int, seconds: float, data: str | None) -> list[dict]:
    """The fer package's two classifiers timed on the same number of random faces (64x64, its input), and
    their PrivateTest accuracy measured on the same faces ferkit's cards are scored on (fer's preprocessing)."""
    import tempfile

    test = private_test(data, ferplus=False)
    with tempfile.TemporaryDirectory() as tmp:
        npz = os.path.join(tmp, "private.npz")
        np.savez(npz, images=test.images, labels=test.labels)
        r = subprocess.run([python, "-c", FER_SCRIPT, str(faces), str(seconds), npz], capture_output=True, text=True,
                           timeout=1800)
    if r.returncode != 0:
        print(f"fer package: {python} failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}", file=sys.stderr)
        return []
    rows = []
    for m in json.loads(r.stdout.strip().splitlines()[-1]):
        name = "fer (TFLite int8, one face a call)" if m["tflite"] else "fer (mini-Xception, Keras)"
        rows.append({"model": name, "classes": 7, "precision": "int8" if m["tflite"] else "fp32", "tta": "none",
                     "batch": m["batch"], "threads": "tf", "mode": "-", "faces_s": m["faces_s"], "faces": m["faces"],
                     "accuracy": f"{m['accuracy']:.4f} (measured)"})
    return rows


@functools.lru_cache(maxsize=None)
def private_test(data: str | None, ferplus: bool):
    """FER2013's PrivateTest faces, read once a run: FER2013 labels, or the FER+ majority vote."""
    from ferkit.data import default_data_dir, load_dataset

    root = Path(data) if data else default_data_dir()
    return load_dataset(root, ferplus=root / "fer2013new.csv" if ferplus else None).split("PrivateTest")


def private_accuracy(model, data: str | None) -> float:
    """PrivateTest accuracy of a FacialExpressionModel as it is (its TTA, precision and prior correction): FER2013
    labels for a 7-class model, the FER+ majority vote for an 8-class one."""
    test = private_test(data, ferplus=len(model.classes) == 8)
    if tuple(test.class_names) != tuple(model.classes):
        raise SystemExit(f"{model.name}: classes {model.classes} are not the data's {test.class_names}")
    keep = test.labels >= 0
    probs = np.concatenate([model.predict_proba(test.images[i:i + 256]) for i in range(0, len(test.images), 256)])
    return float((probs.argmax(1)[keep] == test.labels[keep]).mean())


def speed_accuracy_chart(rows: list[dict], path: str, machine: str) -> None:
    """faces/s (log) against PrivateTest accuracy for the 7-class models (one protocol: FER2013 labels): each
    model, precision and TTA at its fastest setting, batched (labelled dots) and at batch 1 (squares)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best: dict[tuple, dict] = {}
    for r in rows:
        if not r["accuracy"] or r.get("classes", 7) != 7:
            continue
        key = (r["model"], r["precision"], r["tta"], r["batch"] == 1)
        if key not in best or r["faces_s"] > best[key]["faces_s"]:
            best[key] = r
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    labelled = 0
    for (model, precision, tta, single), r in sorted(best.items()):
        acc = 100 * float(str(r["accuracy"]).split()[0])
        ferkit = not model.startswith("fer (")
        color = "tab:blue" if ferkit else "tab:red"
        if single:
            ax.scatter(r["faces_s"], acc, marker="s", s=30, facecolors="none", edgecolors=color)
            continue
        ax.scatter(r["faces_s"], acc, marker="o", s=46, color=color)
        label = f"{model} {precision}" + (f" {tta}" if ferkit else "")
        ax.annotate(label, (r["faces_s"], acc), textcoords="offset points", fontsize=7, ha="right",
                    xytext=(-10, 10 if labelled % 2 == 0 else -16),  # alternate above / below: no overlaps
                    arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "grey"})  # which dot a label names
        labelled += 1
    ax.scatter([], [], marker="o", color="grey", label="batched (64 faces a call)")
    ax.scatter([], [], marker="s", facecolors="none", edgecolors="grey", label="one face a call")
    ax.legend(loc="center left", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("faces per second (classifier alone, log scale)")
    ax.set_ylabel("FER2013 PrivateTest accuracy (%)")
    ax.set_title(f"Speed and accuracy, 7-class models: ferkit (blue), the fer package (red)\n{machine}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> int:
    from ferkit.runtime.model import shipped_models

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="all", help="comma-separated shipped names or .onnx paths (default: all shipped)")
    ap.add_argument("--precisions", default="fp32,int8")
    ap.add_argument("--ttas", default="none,flip,multi")
    ap.add_argument("--batches", default="1,64", help="faces per predict_proba call")
    ap.add_argument("--threads", default="ort,1,2,runtime",
                    help="intra-op threads: ort (its default), ferkit, numbers, or runtime (the run time's own sessions)")
    ap.add_argument("--modes", default="sequential,parallel", help="onnxruntime execution modes")
    ap.add_argument("--faces", type=int, default=256, help="random faces a row goes through (at most)")
    ap.add_argument("--seconds", type=float, default=1.5, help="time a row may take (at least one batch is timed)")
    ap.add_argument("--reference", default="fer2013-7,fp32,none,64,ort,sequential",
                    help="model,precision,tta,batch,threads,mode of the row the ratio column divides by "
                         "(the first row when absent)")
    ap.add_argument("--fer-python", default=None, help="a Python with the fer package: time its networks too")
    ap.add_argument("--data", default=None, help="FER2013 folder, for the PrivateTest accuracy column (default: "
                                                 "ferkit's data folder, $FERKIT_DATA)")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    ap.add_argument("--no-score", dest="score", action="store_false",
                    help="the accuracy column from the cards alone (their own TTA): no PrivateTest scoring of "
                         "the other rows after the timings")
    ap.add_argument("--chart", default=None, help="also draw faces/s against PrivateTest accuracy into this PNG")
    args = ap.parse_args(argv)

    import onnxruntime

    from ferkit.errors import ModelError
    from ferkit.preprocessing import tta_cost
    from ferkit.runtime.model import FacialExpressionModel
    from ferkit.runtime.precision import cpu_isa, cpu_model

    models = shipped_models() if args.models == "all" else parse_list(args.models)
    faces = np.random.default_rng(0).integers(0, 256, (args.faces, 48, 48), dtype=np.uint8)
    rows = []
    grid = itertools.product(models, parse_list(args.precisions), parse_list(args.ttas), parse_list(args.batches, int),
                             parse_list(args.threads), parse_list(args.modes))
    loaded = {}
    for name, precision, tta, batch, threads, mode in grid:
        key = (name, precision, tta)
        if key not in loaded:
            try:
                loaded[key] = FacialExpressionModel(name, precision=precision, tta=tta)
                loaded[key].own_sessions = (loaded[key].session, loaded[key].small_session)
            except ModelError as exc:
                print(f"skipped {name} {precision}: {exc}", file=sys.stderr)
                loaded[key] = None
        model = loaded[key]
        if model is None or tta_cost(tta) > tta_cost(model.card.tta):
            continue
        if threads == "runtime":  # the model's own sessions: ferkit's threads, one thread for small calls where faster
            if mode != "sequential":
                continue
            model.session, model.small_session = model.own_sessions
        else:
            model.session = model.small_session = make_session(model.file, threads, mode)
        speed, done = faces_per_second(model, faces, batch, args.seconds)
        rows.append({"model": model.name, "path": name, "classes": len(model.classes), "precision": precision,
                     "tta": tta, "batch": batch, "threads": threads, "mode": mode, "faces_s": speed, "faces": done, "accuracy": card_accuracy(model, precision, tta)})
        print(f"{model.name} {precision} tta={tta} batch={batch} threads={threads} {mode}: {speed:,.1f} faces/s "
              f"({done} faces)", file=sys.stderr)
    if args.score:  # after every timing: what each (model, precision, TTA) scores on PrivateTest, as the run time runs it
        scored = {}
        for r in rows:
            key = (r["model"], r["precision"], r["tta"])
            if r["accuracy"]:  # the card's own figure for this TTA and precision, the whole split
                continue
            if key not in scored:
                scored[key] = private_accuracy(loaded[(r["path"], r["precision"], r["tta"])], args.data)
                print(f"scored {' '.join(key)}: {scored[key]:.4f}", file=sys.stderr)
            r["accuracy"] = f"{scored[key]:.4f} (measured)"
    if args.fer_python:
        rows += fer_rows(args.fer_python, args.faces, args.seconds, args.data)
    if not rows:
        print("no rows measured", file=sys.stderr)
        return 1

    ref_key = parse_list(args.reference)
    cols = ("model", "precision", "tta", "batch", "threads", "mode")
    ref = next((r for r in rows if [str(r[c]) for c in cols] == ref_key), rows[0])
    machine = f"{cpu_model()} ({cpu_isa() or 'flags unknown'}), {os.cpu_count()} CPUs"
    print(f"\n{machine}, onnxruntime {onnxruntime.__version__}, Python "
          f"{platform.python_version()}; up to {args.faces} random faces a row, {args.seconds:g} s at most; "
          f"ratio against {' '.join(str(ref[c]) for c in cols)}\n")
    print("| model | precision | TTA | batch | threads | mode | faces/s | ratio | PrivateTest accuracy |")
    print("|---|---|---|---:|---|---|---:|---:|---:|")
    for r in rows:
        acc = r["accuracy"] or "-"
        print(f"| {r['model']} | {r['precision']} | {r['tta']} | {r['batch']} | {r['threads']} | {r['mode']} | "
              f"{r['faces_s']:,.1f} | {r['faces_s'] / ref['faces_s']:.2f}x | {acc} |")
    print("\nAccuracy: the card's figure (its own TTA), or '(measured)': scored here on all of PrivateTest as the run "
          "time runs that row; '-': not scored (--no-score).")
    if args.chart:
        speed_accuracy_chart(rows, args.chart, machine)
        print(f"wrote {args.chart}", file=sys.stderr)
    if args.json:
        from ferkit.fileio import atomic_write_json

        atomic_write_json(args.json, {"cpu": cpu_model(), "isa": cpu_isa(), "onnxruntime": onnxruntime.__version__,
                                      "reference": ref, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
