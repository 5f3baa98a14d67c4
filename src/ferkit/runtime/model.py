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
from ferkit.modelcard import INPUT_NAME, OUTPUT_NAME, ModelCard
from ferkit.preprocessing import MAX_BATCH, average_views, check_tta, live_tta, normalize, to_face48, tta_cost
from ferkit.runtime.precision import choose_file
from ferkit.runtime.session import create_session, default_threads
from ferkit.runtime.small_calls import SMALL_VIEWS, one_thread_faster

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
DEFAULT_MODEL = "fer2013-7"
# Tiers by what they cost: `--model fast` is the one-view distilled net, `--model accurate` the default.
MODEL_ALIASES = {"fast": "fer2013-7-fast", "accurate": DEFAULT_MODEL, "robust": "fer2013-7-robust"}
__all__ = ["DEFAULT_MODEL", "FacialExpressionModel", "MODEL_ALIASES", "ModelError", "WEIGHTS_DIR", "live_tta",
           "resolve_model_path", "shipped_models"]


def shipped_models() -> list[str]:
    """Names of the models inside the installed package (e.g. ['fer2013-7', 'ferplus-8'])."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.onnx") if p.with_suffix(".json").is_file())


def resolve_model_path(path: str | Path | None = None) -> Path:
    """None -> $FERKIT_MODEL or the shipped default; a shipped name ('ferplus-8'), a tier ('fast') or a path ->
    the .onnx path."""
    if path is None:
        path = os.environ.get("FERKIT_MODEL") or DEFAULT_MODEL
    p = Path(path)
    if not p.exists() and p.suffix != ".onnx" and len(p.parts) == 1:  # a shipped model's name, or a tier's
        p = WEIGHTS_DIR / f"{MODEL_ALIASES.get(p.name, p.name)}.onnx"
    if p.is_dir():
        raise ModelError(f"{p}: is a directory; pass the .onnx file")
    if not p.is_file():
        shipped = ", ".join(shipped_models() + sorted(MODEL_ALIASES)) or "none installed"
        raise ModelError(f"{p}: no such model file (shipped models: {shipped})")
    return p


def _dims(shape) -> list:
    """An onnxruntime shape with symbolic/unknown dimensions as None."""
    return [d if isinstance(d, int) and d > 0 else None for d in shape]


class FacialExpressionModel:
    """Classify face crops into expressions with an ONNX model that follows the ferkit contract.

    >>> model = FacialExpressionModel()            # the shipped default (fer2013-7)
    >>> label, probs = model.predict(face_crop)     # any size, grey/BGR/BGRA, uint8/uint16/float
    """

    def __init__(self, path: str | Path | None = None, *, threads: int | None = None, tta: str | None = None,
                 live: bool = False, max_batch: int = MAX_BATCH, prior_correction: bool = True,
                 precision: str | None = None):
        """`tta` overrides the card's test-time augmentation. `live` (webcam, video, streams): the TTA
        `ferkit.preprocessing.live_tta` picks for frames. `max_batch`: views one network run takes at
        most, so memory is bounded by it, not by the number of faces in a photo. `prior_correction=False`:
        the network's averaged probabilities without the card's prior correction (for scoring it or choosing it).
        `precision`: auto (the default, or $FERKIT_PRECISION): the card's int8 file where it is faster on this
        machine (`ferkit.runtime.precision`), fp32, or int8; `self.precision` says which and `self.file` is the
        ONNX file that runs (`self.path` stays the model's .onnx, its card beside it)."""
        self.path = resolve_model_path(path)
        card_path = self.path.with_suffix(".json")
        if not card_path.is_file():
            raise ModelError(f"{self.path}: its model card {card_path.name} is missing beside it")
        self.card = ModelCard.load(card_path)  # checked: ModelError naming the card
        self.classes: tuple[str, ...] = tuple(self.card.classes)
        self.input_size, self.mean, self.std = self.card.input_size, self.card.mean, self.card.std
        if tta is not None:
            check_tta(tta, "tta", ModelError)
        self.tta = live_tta(self.card.tta, tta) if live else (tta or self.card.tta)
        if int(max_batch) < 1:
            raise ModelError(f"max_batch {max_batch}: must be 1 or more")
        self.max_batch = int(max_batch)
        self.prior_correction = bool(prior_correction) and self.card.prior_correction is not None
        threads = threads or default_threads()
        self.file, self.precision = choose_file(self.path, self.card, precision)
        try:
            self.session = create_session(self.file, threads)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"{self.file}: onnxruntime cannot load it ({str(exc).strip().splitlines()[0][:300]})") from None
        self._check_graph(card_path)
        # Calls of a face or two: a one-thread session where that is measured to be faster here.
        small = one_thread_faster(self.file, threads, self.input_size, tta_cost(self.tta))
        self.small_session = create_session(self.file, 1) if small else self.session

    def _check_graph(self, card_path: Path) -> None:
        """The ONNX graph must take and give what the card says (names, shape, type)."""
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name: o for o in self.session.get_outputs()}
        if INPUT_NAME not in inputs or OUTPUT_NAME not in outputs:
            raise ModelError(
                f"{self.path}: expected input {INPUT_NAME!r} and output {OUTPUT_NAME!r}, "
                f"found {sorted(inputs)} -> {sorted(outputs)}"
            )
        graph_in = inputs[INPUT_NAME]
        dims, want = _dims(graph_in.shape), [None, 1, self.input_size, self.input_size]
        if len(dims) != 4 or any(d is not None and d != w for d, w in zip(dims[1:], want[1:])) \
                or dims[0] not in (None,):
            shown = "[" + ", ".join("N" if d is None else str(d) for d in dims) + "]"
            raise ModelError(f"{self.path}: its input {INPUT_NAME!r} has shape {shown} but its card "
                             f"{card_path.name} says [N, 1, {self.input_size}, {self.input_size}]")
        if graph_in.type != "tensor(float)":
            raise ModelError(f"{self.path}: its input {INPUT_NAME!r} is {graph_in.type}, not float32 as its card says")
        shape = _dims(outputs[OUTPUT_NAME].shape)
        if len(shape) != 2:
            raise ModelError(f"{self.path}: its output {OUTPUT_NAME!r} has rank {len(shape)}, not 2 (faces x classes)")
        if shape[1] is not None and shape[1] != len(self.classes):
            raise ModelError(f"{self.path}: outputs {shape[1]} classes but its card lists {len(self.classes)}")

    @property
    def name(self) -> str:
        return self.card.name

    def __repr__(self) -> str:
        return f"FacialExpressionModel({str(self.path)!r}, classes={len(self.classes)}, tta={self.tta!r})"

    # -- inference --------------------------------------------------------------------------------
    def faces48(self, faces: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Face crops (a list of any-size images, or a (N,S,S) uint8 array) -> (N,S,S) uint8 grey, S the card's
        input size (48 for every shipped model)."""
        s = self.input_size
        if isinstance(faces, np.ndarray) and faces.ndim == 3 and faces.shape[1:] == (s, s) and faces.dtype == np.uint8:
            return faces
        return np.stack([to_face48(f, s) for f in faces]) if len(faces) else np.zeros((0, s, s), np.uint8)

    def preprocess(self, faces: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Face crops -> (N,1,S,S) float32 network input, normalised as the card's `input` block says (no TTA)."""
        return normalize(self.faces48(faces), self.mean, self.std)

    def _run(self, faces: np.ndarray) -> np.ndarray:
        session = self.small_session if len(faces) <= SMALL_VIEWS else self.session
        return session.run([OUTPUT_NAME], {INPUT_NAME: normalize(faces, self.mean, self.std)})[0]

    def predict_proba(self, faces: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Probabilities (N, C) in `classes` order: the mean over the TTA views, at most `max_batch` views a run."""
        faces = self.faces48(faces)
        if len(faces) == 0:
            return np.zeros((0, len(self.classes)), np.float32)
        return self.adjust(average_views(self._run, faces, self.tta, self.max_batch))

    def adjust(self, probs: np.ndarray) -> np.ndarray:
        """The card's prior correction (p * prior^-tau, renormalised) of averaged probabilities, when it is on."""
        return self.card.adjust(probs) if self.prior_correction else probs

    def predict_batch(self, faces: np.ndarray | Sequence[np.ndarray]) -> list[tuple[str, dict[str, float]]]:
        """[(label, {class: probability}), ...] for a batch of face crops."""
        return [self._labelled(p) for p in self.predict_proba(faces)]

    def predict(self, face: np.ndarray) -> tuple[str, dict[str, float]]:
        """One face crop -> (label, {class: probability})."""
        return self._labelled(self.predict_proba([face])[0])

    def _labelled(self, p: np.ndarray) -> tuple[str, dict[str, float]]:
        return self.classes[int(np.argmax(p))], {c: float(v) for c, v in zip(self.classes, p)}
