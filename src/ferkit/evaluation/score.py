"""Scoring a predictor on labelled faces: test-time augmentation, the split (or a sample of it), the metrics,
and the reports (metrics.json, confusion.png, reliability.png)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from ferkit.errors import DataError, ModelError, UsageError
from ferkit.evaluation.metrics import ECE_BINS, align_classes, compute_metrics
from ferkit.evaluation.plots import plot_confusion, plot_reliability
from ferkit.evaluation.predictor import PredictFn, Predictor, onnx_predictor
from ferkit.fileio import atomic_write_json, ensure_dir
from ferkit.preprocessing import TTA_MODES, tta_views

SAMPLE_EVERY = 8  # the quick check a model card records: every 8th face of a split


# ---------------------------------------------------------------------------- test-time augmentation
def predict_tta(predict: PredictFn, faces: np.ndarray, mode: str = "none", batch: int = 512,
                progress: bool = False, adjust: PredictFn | None = None) -> np.ndarray:
    """Mean softmax probabilities over the TTA views, computed in batches of `batch` faces, then `adjust`ed
    (a model card's prior correction) when given."""
    from tqdm import tqdm

    outs = []
    with tqdm(total=len(faces), desc=f"scoring (TTA {mode})", unit="face", disable=not progress, leave=False,
              file=sys.stderr, mininterval=0.5 if sys.stderr.isatty() else 10) as bar:
        for i in range(0, len(faces), batch):
            views = tta_views(faces[i:i + batch], mode)
            outs.append(np.mean([np.asarray(predict(v), dtype=np.float64) for v in views], axis=0))
            bar.update(len(faces[i:i + batch]))
    if not outs:
        raise DataError("no faces to score")
    probs = np.concatenate(outs).astype(np.float32)
    return adjust(probs) if adjust is not None else probs


# ---------------------------------------------------------------------------- the faces
def evaluate_faces(predict: PredictFn, faces, model_classes, tta: str = "none", batch: int = 512,
                   progress: bool = False) -> tuple[dict, np.ndarray]:
    """Score `faces` (a FaceSet) with `predict`; returns (metrics with the class report, probabilities of kept faces).
    A `Predictor`'s prior correction is applied after TTA averaging (its bare `predict` function has none)."""
    align, keep, y = align_classes(faces.class_names, faces.labels, model_classes)
    if not keep.any():
        raise DataError(
            f"none of the data's classes ({', '.join(faces.class_names)}) is known to the model "
            f"({', '.join(model_classes)})"
        )
    probs = predict_tta(predict, faces.images[keep], tta, batch, progress, getattr(predict, "adjust", None))
    if probs.shape != (int(keep.sum()), len(model_classes)):
        raise ModelError(f"model returned shape {probs.shape}, expected ({int(keep.sum())}, {len(model_classes)})")
    metrics = compute_metrics(probs, y, model_classes)
    metrics["tta"] = tta
    metrics["classes"] = align.as_dict()
    return metrics, probs


def choose_split(faces, split: str | None):
    """(split name, faces): the named split; by default PrivateTest where present, else every face ('all')."""
    from ferkit.classes import canonical_split
    from ferkit.data import UNSPLIT

    if split is None:
        if "PrivateTest" in faces.split_names():
            return "PrivateTest", faces.split("PrivateTest")
        return UNSPLIT, faces
    if split.strip().lower() == UNSPLIT:
        return UNSPLIT, faces
    return canonical_split(split) or split, faces.split(split)


def every_nth(faces, every: int | None):
    """A deterministic sample: faces 0, n, 2n, ... of the set in its order (all of them without `every`)."""
    if not every or every == 1:
        return faces
    if every < 1:
        raise UsageError(f"--every {every}: must be at least 1")
    return faces.subset(np.arange(0, len(faces), every))


def _unknown_folders(paths: list[str]) -> dict[str, int]:
    counts = {}
    for folder in paths:
        counts[folder] = sum(len([f for f in files if not f.startswith(".")]) for _, _, files in os.walk(folder))
    return counts


# ---------------------------------------------------------------------------- the whole evaluation
def card_metrics(m: dict, sample: dict, tta: str, ferplus) -> dict:
    """What a card keeps of one split's evaluation, and of its every-Nth-face sample (a quick check)."""
    return {
        "accuracy": round(m["accuracy"], 5), "tta": tta, "faces": m["n"],
        "balanced_accuracy": round(m["balanced_accuracy"], 5), "macro_f1": round(m["macro_f1"], 5),
        "ece": round(m["ece"], 5),
        "recall": {c: round(v["recall"], 4) for c, v in m["per_class"].items()},
        "protocol": "FER+ majority vote" if ferplus else "FER2013 labels",
        "sample": {"every": sample["data"]["sample_every"], "faces": sample["n"],
                   "accuracy": round(sample["accuracy"], 5)},
    }


def evaluate(model: Predictor | str | Path, data: str | Path, split: str | None = None, tta: str | None = None,
             ferplus: str | Path | None = None, out: str | Path | None = None, threads: int | None = None,
             faces=None, every: int | None = None, progress: bool = False) -> dict:
    """Score a predictor (or an ONNX model, by path or shipped name) on a data set; returns the metrics dict
    and, with `out`, writes metrics.json, confusion.png and reliability.png there. `tta=None` means the
    model's own default (the card's); `every` scores every Nth face of the split only."""
    from ferkit.data import load_dataset

    pred = model if isinstance(model, Predictor) else onnx_predictor(model, threads)
    tta = tta or pred.default_tta
    if tta not in TTA_MODES:
        raise UsageError(f"unknown TTA mode {tta!r}; choose one of {', '.join(TTA_MODES)}")
    if faces is None:
        faces = load_dataset(data, ferplus=ferplus)
    split_name, subset = choose_split(faces, split)
    scored = every_nth(subset, every)
    metrics, _ = evaluate_faces(pred, scored, pred.classes, tta, progress=progress)
    report = faces.report
    sample = {"sample_every": every, "faces_in_sample": len(scored)} if every and every > 1 else {}
    metrics = {
        "model": {"path": str(pred.path), "backend": pred.backend, "name": pred.name,
                  "architecture": pred.architecture, "classes": list(pred.classes), "prior_tau": pred.prior_tau},
        "data": {"source": str(data), "ferplus": str(ferplus) if ferplus else None, "split": split_name,
                 "faces_in_split": len(subset), **sample, "faces_scored": metrics["n"],
                 "load_report": report.summary(), "skipped_files": len(report.skipped),
                 "unknown_folders": _unknown_folders(report.unknown_folders)},
        **metrics,
    }
    if out is not None:
        write_report(metrics, out)
    return metrics


def write_report(metrics: dict, out: str | Path) -> dict[str, Path]:
    out = ensure_dir(out)
    title = (f"{metrics['model']['name']} on {metrics['data']['split']} ({metrics['n']:,} faces, TTA "
             f"{metrics['tta']}): accuracy {metrics['accuracy']:.2%}, balanced {metrics['balanced_accuracy']:.2%}")
    files = {
        "metrics": out / "metrics.json",
        "confusion": plot_confusion(metrics, out / "confusion.png", title),
        "reliability": plot_reliability(metrics, out / "reliability.png",
                                        f"{metrics['model']['name']}: ECE {metrics['ece']:.3f} ({ECE_BINS} bins)"),
    }
    metrics["files"] = {k: str(v) for k, v in files.items()}
    atomic_write_json(files["metrics"], metrics)
    return files
