"""What scoring needs of a model: a function from uint8 faces to probabilities, and its class names.

An ONNX model (a .onnx file with its card, or a shipped model's name) becomes one here, through the
runtime (onnxruntime, never torch). A training run folder becomes one in `ferkit.train.predictor`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ferkit.errors import UsageError

PredictFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Predictor:
    """A loaded model reduced to what scoring needs; calling it predicts."""

    predict: PredictFn  # uint8 faces (N, 48, 48) -> probabilities (N, C)
    classes: tuple[str, ...]
    backend: str  # "onnx" (onnxruntime) or "torch" (a training run folder)
    name: str
    architecture: str
    default_tta: str  # the card's TTA for ONNX models (what the runtime does), "none" for runs
    path: Path
    adjust: Callable[[np.ndarray], np.ndarray] | None = None  # after TTA averaging: the card's prior correction
    prior_tau: float = 0.0  # that correction's tau (0: none)

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        return self.predict(faces)


def onnx_predictor(model: str | Path, threads: int | None = None, precision: str = "fp32") -> Predictor:
    """An ONNX model: a .onnx file with its card JSON beside it, or a shipped model's name (onnxruntime only).
    `precision`: fp32 (the file the card's figures are of), int8 (the card's int8 file) or auto (the run time's pick)."""
    if Path(model).is_dir():
        raise UsageError(f"{model} is a folder, not an ONNX model (a training run folder is scored with torch)")
    from ferkit.runtime.model import FacialExpressionModel

    # TTA is done by scoring, on uint8 faces; the card's prior correction after it, as the runtime does
    onnx = FacialExpressionModel(model, threads=threads, tta="none", prior_correction=False,
                                 precision=precision)
    pc = onnx.card.prior_correction
    return Predictor(onnx.predict_proba, onnx.classes, "onnx", onnx.card.name, onnx.card.architecture,
                     onnx.card.tta or "none", onnx.file, onnx.card.adjust if pc else None, pc["tau"] if pc else 0.0)
