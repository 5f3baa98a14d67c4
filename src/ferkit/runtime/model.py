"""`FacialExpressionModel`: an ONNX expression classifier and its model card (no torch).

The input side is `ferkit.preprocessing` — the very functions training uses — so a face crop is turned
into network input in exactly one way everywhere.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ferkit.errors import ModelError  # noqa: F401 (re-exported)
from ferkit.modelcard import INPUT_NAME, OUTPUT_NAME, RUNTIME_TTA, ModelCard
from ferkit.preprocessing import INPUT_SIZE, normalize, to_face48, tta_cost, tta_views
from ferkit.runtime.session import create_session

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
DEFAULT_MODEL = "fer2013-7"


def shipped_models() -> list[str]:
    """Names of the models inside the installed package (e.g. ['fer2013-7', 'ferplus-8'])."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.onnx") if p.with_suffix(".json").is_file())


def resolve_model_path(path: str | Path | None = None) -> Path:
    """None -> $FERKIT_MODEL or the shipped default; a shipped name ('ferplus-8') or a path -> the .onnx path."""
    if path is None:
        path = os.environ.get("FERKIT_MODEL") or DEFAULT_MODEL
    p = Path(path)
    if not p.exists() and p.suffix != ".onnx" and len(p.parts) == 1:  # a shipped model's name
        p = WEIGHTS_DIR / f"{p.name}.onnx"
    if p.is_dir():
        raise ModelError(f"{p}: is a directory; pass the .onnx file")
    if not p.is_file():
        shipped = ", ".join(shipped_models()) or "none installed"
        raise ModelError(f"{p}: no such model file (shipped models: {shipped})")
    return p


def live_tta(card_tta: str) -> str:
    """The TTA live paths use by default: the card's, at most flip (2 runs a face)."""
    return card_tta if tta_cost(card_tta) <= tta_cost("flip") else "flip"


class FacialExpressionModel:
    """Classify face crops into expressions with an ONNX model that follows the ferkit contract.

    >>> model = FacialExpressionModel()            # the shipped default (fer2013-7)
    >>> label, probs = model.predict(face_crop)     # any size, grey/BGR/BGRA, uint8/uint16/float
    """

    def __init__(self, path: str | Path | None = None, *, threads: int | None = None, tta: str | None = None,
                 live: bool = False):
        """`tta` overrides the card's test-time augmentation. `live` (webcam, video, streams) caps the
        card's choice at flip when it asks for more views (crops, multi): a tracked face is averaged over
        frames anyway, and 16 views a face would cut the frame rate several times."""
        self.path = resolve_model_path(path)
        card_path = self.path.with_suffix(".json")
        if not card_path.is_file():
            raise ModelError(f"{self.path}: its model card {card_path.name} is missing beside it")
        try:
            self.card = ModelCard.load(card_path)
        except (ValueError, TypeError) as exc:
            raise ModelError(f"{card_path}: not a valid model card ({exc})") from None
        self.classes: tuple[str, ...] = tuple(self.card.classes)
        card_tta = self.card.tta or "none"
        if card_tta not in RUNTIME_TTA:
            raise ModelError(f"{card_path}: unknown tta {card_tta!r} (expected {' or '.join(RUNTIME_TTA)})")
        if tta is not None and tta not in RUNTIME_TTA:
            raise ModelError(f"tta {tta!r}: choose {' or '.join(RUNTIME_TTA)}")
        self.tta = tta or (live_tta(card_tta) if live else card_tta)
        try:
            self.session = create_session(self.path, threads)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"{self.path}: onnxruntime cannot load it ({exc})") from None
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        if INPUT_NAME not in inputs or OUTPUT_NAME not in outputs:
            raise ModelError(
                f"{self.path}: expected input {INPUT_NAME!r} and output {OUTPUT_NAME!r}, "
                f"found {sorted(inputs)} -> {sorted(outputs)}"
            )
        shape = self.session.get_outputs()[0].shape
        if len(shape) == 2 and isinstance(shape[1], int) and shape[1] != len(self.classes):
            raise ModelError(f"{self.path}: outputs {shape[1]} classes but its card lists {len(self.classes)}")

    @property
    def name(self) -> str:
        return self.card.name

    def __repr__(self) -> str:
        return f"FacialExpressionModel({str(self.path)!r}, classes={len(self.classes)}, tta={self.tta!r})"

    # -- inference --------------------------------------------------------------------------------
    def faces48(self, faces: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Face crops (a list of any-size images, or a (N,48,48) uint8 array) -> (N,48,48) uint8 grey."""
        if isinstance(faces, np.ndarray) and faces.ndim == 3 and faces.shape[1:] == (INPUT_SIZE, INPUT_SIZE) \
                and faces.dtype == np.uint8:
            return faces
        return np.stack([to_face48(f) for f in faces]) if len(faces) else \
            np.zeros((0, INPUT_SIZE, INPUT_SIZE), np.uint8)

    def preprocess(self, faces: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Face crops -> (N,1,48,48) float32 network input (no test-time augmentation)."""
        return normalize(self.faces48(faces))

    def predict_proba(self, faces: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Probabilities (N, C) in `classes` order: the mean over the card's test-time augmentation views."""
        faces = self.faces48(faces)
        if len(faces) == 0:
            return np.zeros((0, len(self.classes)), np.float32)
        views = tta_views(faces, self.tta)
        p = self.session.run([OUTPUT_NAME], {INPUT_NAME: normalize(np.concatenate(views))})[0]
        return p.reshape(len(views), len(faces), -1).mean(axis=0, dtype=np.float64).astype(np.float32)

    def predict_batch(self, faces: np.ndarray | Sequence[np.ndarray]) -> list[tuple[str, dict[str, float]]]:
        """[(label, {class: probability}), ...] for a batch of face crops."""
        return [self._labelled(p) for p in self.predict_proba(faces)]

    def predict(self, face: np.ndarray) -> tuple[str, dict[str, float]]:
        """One face crop -> (label, {class: probability})."""
        return self._labelled(self.predict_proba([face])[0])

    def _labelled(self, p: np.ndarray) -> tuple[str, dict[str, float]]:
        return self.classes[int(np.argmax(p))], {c: float(v) for c, v in zip(self.classes, p)}
