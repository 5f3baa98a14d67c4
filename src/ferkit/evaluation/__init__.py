"""Scoring a classifier on labelled faces, whatever runs it: numpy, scikit-learn and matplotlib only.

A model comes as a `Predictor`: one function, uint8 faces (N, 48, 48) -> softmax probabilities (N, C),
with its class names. `onnx_predictor` makes one from an ONNX model through the runtime; a training run
folder's comes from `ferkit.train.predictor` (torch). Nothing here imports torch or the training stack,
so evaluating a shipped ONNX model works in the run-time install plus scikit-learn:

- test-time augmentation: the views of `ferkit.preprocessing.tta_views` (the runtime's own), averaged
  as probabilities (`predict_tta`);
- the data's classes matched to the model's by name (`align_classes`): classes the model does not
  know are counted and left out; model classes absent from the data are fine;
- accuracy, per-class precision/recall/F1, confusion matrix, expected calibration error (`compute_metrics`);
- a normalised confusion-matrix PNG and a reliability diagram (`write_report`).
"""

from __future__ import annotations

from ferkit.evaluation.metrics import (
    ECE_BINS, ClassAlignment, align_classes, compute_metrics, expected_calibration_error,
)
from ferkit.evaluation.plots import plot_confusion, plot_reliability, save_figure
from ferkit.evaluation.predictor import PredictFn, Predictor, onnx_predictor
from ferkit.evaluation.score import (
    SAMPLE_EVERY, choose_split, evaluate, evaluate_faces, every_nth, predict_tta, write_report,
)

__all__ = [
    "ECE_BINS", "SAMPLE_EVERY", "ClassAlignment", "PredictFn", "Predictor", "align_classes", "choose_split",
    "compute_metrics", "evaluate", "evaluate_faces", "every_nth", "expected_calibration_error", "onnx_predictor",
    "plot_confusion", "plot_reliability", "predict_tta", "save_figure", "write_report",
]
