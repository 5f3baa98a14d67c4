"""Metrics of a classifier's probabilities against labels: the data's classes matched to the model's by name,
accuracy, balanced accuracy (mean per-class recall), macro-F1, per-class precision/recall/F1 (scikit-learn),
confusion matrix, expected calibration error, NLL."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ECE_BINS = 15


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
    balanced = float(recall[present].mean()) if present.any() else 0.0
    nll = float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0)).mean())
    per_class = {
        name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
               "support": int(support[i]), "predicted": int((pred == i).sum())}
        for i, name in enumerate(class_names)
    }
    return {
        "n": int(len(labels)),
        "accuracy": float(accuracy_score(labels, pred)),
        "balanced_accuracy": balanced,  # mean per-class recall over the classes present in the data
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,  # over classes present in the data
        "macro_recall": balanced,  # the same figure under its other name
        "weighted_f1": float((f1 * support).sum() / max(1, support.sum())),
        "ece": ece,
        "nll": nll,
        "per_class": per_class,
        "confusion": {"classes": class_names, "counts": cm.tolist(), "normalized": cm_norm.round(6).tolist()},
        "calibration_bins": bins,
    }
