"""Scoring a classifier on labelled faces, whatever runs it: numpy, scikit-learn and matplotlib only.

Backends (a torch run folder, an ONNX file) supply one function, uint8 faces (N, 48, 48) -> softmax
probabilities (N, C). Everything else lives here and never imports torch, so evaluating a shipped
ONNX model works in the run-time install plus scikit-learn:

- test-time augmentation: the views of `ferkit.preprocessing.tta_views` (the runtime's own), averaged
  as probabilities;
- the data's classes matched to the model's by name (`align_classes`): classes the model does not
  know are counted and left out; model classes absent from the data are fine;
- accuracy, per-class precision/recall/F1, confusion matrix, expected calibration error (`compute_metrics`);
- a normalised confusion-matrix PNG and a reliability diagram.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ferkit.preprocessing import TTA_MODES, tta_views


ECE_BINS = 15

PredictFn = Callable[[np.ndarray], np.ndarray]


# ---------------------------------------------------------------------------- test-time augmentation
def predict_tta(predict: PredictFn, faces: np.ndarray, mode: str = "none", batch: int = 512) -> np.ndarray:
    """Mean softmax probabilities over the TTA views, computed in batches of `batch` faces."""
    outs = []
    for i in range(0, len(faces), batch):
        views = tta_views(faces[i:i + batch], mode)
        outs.append(np.mean([np.asarray(predict(v), dtype=np.float64) for v in views], axis=0))
    if not outs:
        raise ValueError("no faces to score")
    return np.concatenate(outs).astype(np.float32)


# ---------------------------------------------------------------------------- classes
@dataclass
class ClassAlignment:
    """How the data's labels map onto the model's output columns."""

    model_classes: tuple[str, ...]
    data_classes: tuple[str, ...]
    to_model: np.ndarray  # data label -> model column, -1 where the model does not know the class
    unknown: dict[str, int] = field(default_factory=dict)  # data class the model lacks -> faces left out
    absent: list[str] = field(default_factory=list)  # model classes with no face in the data

    def as_dict(self) -> dict:
        return {"model_classes": list(self.model_classes), "data_classes": list(self.data_classes),
                "left_out": self.unknown, "absent_from_data": self.absent}


def align_classes(data_classes, labels: np.ndarray, model_classes) -> tuple[ClassAlignment, np.ndarray, np.ndarray]:
    """Match class names (synonyms included); returns (alignment, kept mask, labels as model columns)."""
    from ferkit.classes import canonical_class

    model_classes = tuple(model_classes)
    canon_model = [canonical_class(c) or c for c in model_classes]
    to_model = np.array([canon_model.index(canonical_class(c) or c) if (canonical_class(c) or c) in canon_model
                         else -1 for c in data_classes], dtype=np.int64)
    mapped = to_model[labels] if len(labels) else np.zeros(0, np.int64)
    keep = mapped >= 0
    unknown = {}
    for i, c in enumerate(data_classes):
        n = int((labels == i).sum())
        if to_model[i] < 0 and n:
            unknown[c] = n
    present = set(mapped[keep].tolist())
    absent = [c for j, c in enumerate(model_classes) if j not in present]
    return ClassAlignment(model_classes, tuple(data_classes), to_model, unknown, absent), keep, mapped[keep]


# ---------------------------------------------------------------------------- metrics
def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> tuple[float, list[dict]]:
    """ECE over `bins` equal-width confidence bins (top-class confidence vs accuracy), and the bins."""
    conf = probs.max(axis=1).astype(np.float64)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)  # (lo, hi] bins, 0 in the first
    ece, table = 0.0, []
    for b in range(bins):
        m = which == b
        count = int(m.sum())
        if count:
            acc, c = float(correct[m].mean()), float(conf[m].mean())
            ece += count / len(conf) * abs(acc - c)
        else:
            acc = c = None
        table.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": count, "accuracy": acc,
                      "confidence": c})
    return float(ece), table


def compute_metrics(probs: np.ndarray, labels: np.ndarray, class_names) -> dict:
    """Accuracy, per-class precision/recall/F1 (scikit-learn), confusion matrix, ECE, NLL; JSON-ready."""
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    class_names = list(class_names)
    k = len(class_names)
    labels = np.asarray(labels, dtype=np.int64)
    pred = probs.argmax(axis=1)
    cols = list(range(k))
    precision, recall, f1, support = precision_recall_fscore_support(labels, pred, labels=cols, zero_division=0)
    cm = confusion_matrix(labels, pred, labels=cols)
    rows = cm.sum(axis=1, keepdims=True)
    cm_norm = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=np.float64), where=rows > 0)
    present = support > 0
    ece, bins = expected_calibration_error(probs, labels)
    nll = float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0)).mean())
    per_class = {
        name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
               "support": int(support[i]), "predicted": int((pred == i).sum())}
        for i, name in enumerate(class_names)
    }
    return {
        "n": int(len(labels)),
        "accuracy": float(accuracy_score(labels, pred)),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,  # over classes present in the data
        "macro_recall": float(recall[present].mean()) if present.any() else 0.0,  # balanced accuracy
        "weighted_f1": float((f1 * support).sum() / max(1, support.sum())),
        "ece": ece,
        "nll": nll,
        "per_class": per_class,
        "confusion": {"classes": class_names, "counts": cm.tolist(), "normalized": cm_norm.round(6).tolist()},
        "calibration_bins": bins,
    }


# ---------------------------------------------------------------------------- the whole evaluation
def evaluate_faces(predict: PredictFn, faces, model_classes, tta: str = "none", batch: int = 512) -> tuple[dict, np.ndarray]:
    """Score `faces` (a FaceSet) with `predict`; returns (metrics with the class report, probabilities of kept faces)."""
    align, keep, y = align_classes(faces.class_names, faces.labels, model_classes)
    if not keep.any():
        raise ValueError(
            f"none of the data's classes ({', '.join(faces.class_names)}) is known to the model "
            f"({', '.join(model_classes)})"
        )
    probs = predict_tta(predict, faces.images[keep], tta, batch)
    if probs.shape != (int(keep.sum()), len(model_classes)):
        raise ValueError(f"model returned shape {probs.shape}, expected ({int(keep.sum())}, {len(model_classes)})")
    metrics = compute_metrics(probs, y, model_classes)
    metrics["tta"] = tta
    metrics["classes"] = align.as_dict()
    return metrics, probs


# ---------------------------------------------------------------------------- pictures
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(metrics: dict, path: str | Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (rows: true class, recall on the diagonal) with counts."""
    plt = _plt()
    names = metrics["confusion"]["classes"]
    norm = np.asarray(metrics["confusion"]["normalized"])
    counts = np.asarray(metrics["confusion"]["counts"])
    k = len(names)
    fig, ax = plt.subplots(figsize=(1.05 * k + 2.4, 0.95 * k + 1.8))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            if counts[i].sum() == 0:
                continue
            v = norm[i, j]
            ax.text(j, i, f"{v:.2f}\n({counts[i, j]})", ha="center", va="center", fontsize=8,
                    color="white" if v > 0.55 else "black")
    support = counts.sum(axis=1)
    ax.set_xticks(range(k), names, rotation=40, ha="right")
    ax.set_yticks(range(k), [f"{n} ({s})" if s else f"{n} (none)" for n, s in zip(names, support)])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (faces)")
    ax.set_title(title or f"accuracy {metrics['accuracy']:.2%}", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def plot_reliability(metrics: dict, path: str | Path, title: str = "") -> Path:
    """Reliability diagram: accuracy vs confidence per bin, bar width = bin, the ECE in the title."""
    plt = _plt()
    bins = metrics["calibration_bins"]
    fig, ax = plt.subplots(figsize=(4.8, 4.6))
    lo = np.array([b["lo"] for b in bins])
    width = bins[0]["hi"] - bins[0]["lo"]
    acc = np.array([b["accuracy"] if b["accuracy"] is not None else 0.0 for b in bins])
    ax.bar(lo, acc, width=width, align="edge", edgecolor="navy", color="cornflowerblue", label="accuracy")
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top-class probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(title or f"ECE {metrics['ece']:.3f} ({len(bins)} bins)", fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


# ---------------------------------------------------------------------------- models and data
@dataclass
class Predictor:
    """A loaded model reduced to what scoring needs."""

    predict: PredictFn  # uint8 faces (N, 48, 48) -> probabilities (N, C)
    classes: tuple[str, ...]
    backend: str  # "onnx" (onnxruntime) or "torch" (a training run folder)
    name: str
    architecture: str
    default_tta: str  # the card's TTA for ONNX models (what the runtime does), "none" for runs
    path: Path


def load_predictor(model: str | Path, threads: int | None = None, head: str | None = None) -> Predictor:
    """A training run folder (model.json + best.safetensors, scored with torch; `head` picks one head of a
    joint run, default the first) or an ONNX model (a .onnx file with its card JSON beside it, or a shipped
    model's name; scored with onnxruntime only)."""
    path = Path(model)
    if path.is_dir():
        return _torch_predictor(path, threads, head)
    if head is not None:
        raise ValueError(f"--head {head!r} picks a head of a joint training run folder; {model} is not a run folder")
    from ferkit.runtime.model import FacialExpressionModel

    onnx = FacialExpressionModel(path, threads=threads, tta="none")  # TTA is done here, on uint8 faces
    return Predictor(onnx.predict_proba, onnx.classes, "onnx", onnx.card.name, onnx.card.architecture,
                     onnx.card.tta or "none", onnx.path)


def _torch_predictor(run: Path, threads: int | None, head: str | None = None) -> Predictor:
    for needed in ("model.json", "best.safetensors"):
        if not (run / needed).is_file():
            raise FileNotFoundError(f"{run}: not a training run folder ({needed} is missing)")
    try:
        import torch

        from ferkit.train.export import load_run_model
    except ImportError as exc:
        raise ValueError(f"scoring a training run folder needs torch ({exc}); pip install 'ferkit[train]', "
                         f"or evaluate its exported .onnx") from None
    if threads:
        torch.set_num_threads(threads)
    net, spec = load_run_model(run, head=head)
    net = net.float().to(memory_format=torch.contiguous_format)
    classes = tuple(spec.get("classes") or ())
    if len(classes) != spec["num_classes"]:
        raise ValueError(f"{run / 'model.json'}: lists {len(classes)} classes for {spec['num_classes']} outputs")

    from ferkit.preprocessing import normalize

    @torch.no_grad()
    def predict(faces: np.ndarray) -> np.ndarray:
        return net(torch.from_numpy(normalize(faces))).float().softmax(1).numpy()

    name = f"{run.name} ({head} head)" if head else run.name
    return Predictor(predict, classes, "torch", name, spec["name"], "none", run)


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


def _unknown_folders(paths: list[str]) -> dict[str, int]:
    import os

    counts = {}
    for folder in paths:
        counts[folder] = sum(len([f for f in files if not f.startswith(".")]) for _, _, files in os.walk(folder))
    return counts


def evaluate(model: str | Path | Predictor, data: str | Path, split: str | None = None, tta: str | None = None,
             ferplus: str | Path | None = None, out: str | Path | None = None, threads: int | None = None,
             faces=None) -> dict:
    """Score a model on a data set; returns the metrics dict and, with `out`, writes metrics.json,
    confusion.png and reliability.png there. `tta=None` means the model's own default (the card's)."""
    from ferkit.data import load_dataset

    pred = model if isinstance(model, Predictor) else load_predictor(model, threads)
    tta = tta or pred.default_tta
    if tta not in TTA_MODES:
        raise ValueError(f"unknown TTA mode {tta!r}; choose one of {', '.join(TTA_MODES)}")
    if faces is None:
        faces = load_dataset(data, ferplus=ferplus)
    split_name, subset = choose_split(faces, split)
    metrics, _ = evaluate_faces(pred.predict, subset, pred.classes, tta)
    report = faces.report
    metrics = {
        "model": {"path": str(pred.path), "backend": pred.backend, "name": pred.name,
                  "architecture": pred.architecture, "classes": list(pred.classes)},
        "data": {"source": str(data), "ferplus": str(ferplus) if ferplus else None, "split": split_name,
                 "faces_in_split": len(subset), "faces_scored": metrics["n"],
                 "load_report": report.summary(), "skipped_files": len(report.skipped),
                 "unknown_folders": _unknown_folders(report.unknown_folders)},
        **metrics,
    }
    if out is not None:
        write_report(metrics, out)
    return metrics


def write_report(metrics: dict, out: str | Path) -> dict[str, Path]:
    import json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    title = (f"{metrics['model']['name']} on {metrics['data']['split']} ({metrics['n']:,} faces, TTA "
             f"{metrics['tta']}): accuracy {metrics['accuracy']:.2%}")
    files = {
        "metrics": out / "metrics.json",
        "confusion": plot_confusion(metrics, out / "confusion.png", title),
        "reliability": plot_reliability(metrics, out / "reliability.png",
                                        f"{metrics['model']['name']}: ECE {metrics['ece']:.3f} ({ECE_BINS} bins)"),
    }
    metrics["files"] = {k: str(v) for k, v in files.items()}
    files["metrics"].write_text(json.dumps(metrics, indent=2) + "\n")
    return files
