"""Model cards: the JSON that travels beside every ONNX file and says how to use it.

The ONNX graph takes `faces`: float32 (N, 1, S, S) made by `ferkit.preprocessing.normalize` with the
card's `input` mean and std (S = its shape's last two entries, 48 for every shipped model), and
returns `probabilities`: float32 (N, C), softmax already applied, columns in `classes` order.

An optional `prior_correction` block ({"tau": t, "prior": [one number a class], ...}) asks the run time to
correct the averaged probabilities p as p' = p * prior^(-tau), renormalised (post-hoc logit adjustment,
`prior_adjusted`): `prior` is the training class distribution, so rare classes are predicted more often.

`ModelCard.load` is the one reader: it checks everything the run time relies on and raises
`ModelError` naming the file, so a bad card fails when the model is loaded, not at the first face.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ferkit import preprocessing
from ferkit.errors import ModelError
from ferkit.fileio import atomic_write_json

INPUT_NAME = "faces"
OUTPUT_NAME = "probabilities"
RUNTIME_TTA = preprocessing.TTA_MODES  # the test-time augmentations a card may ask the runtime for
REQUIRED = ("name", "classes", "architecture")


def default_input() -> dict:
    return {
        "name": INPUT_NAME, "shape": [None, 1, preprocessing.INPUT_SIZE, preprocessing.INPUT_SIZE],
        "dtype": "float32", "color": "gray", "scale": "pixel / 255",
        "mean": preprocessing.MEAN, "std": preprocessing.STD,
    }


@dataclass
class ModelCard:
    name: str
    classes: list[str]
    architecture: str
    input: dict = field(default_factory=default_input)
    output: dict = field(default_factory=lambda: {"name": OUTPUT_NAME, "kind": "softmax probabilities"})
    tta: str = "none"  # a mode of preprocessing.tta_views: the runtime averages those views' probabilities
    metrics: dict = field(default_factory=dict)  # e.g. {"PrivateTest": {"accuracy": 0.72, "tta": "flip"}}
    training: dict = field(default_factory=dict)  # command, data sha256, wall time, hardware, epochs
    notes: str = ""
    prior_correction: dict | None = None  # {"tau", "prior", ...}: applied after TTA averaging (prior_adjusted)
    int8: dict = field(default_factory=dict)  # {"file": NAME.int8.onnx beside, its checks}: ferkit quantize

    def adjust(self, probs):
        """Probabilities (N, C) with the card's prior correction applied (as they are without one)."""
        pc = self.prior_correction
        return prior_adjusted(probs, pc["prior"], pc["tau"]) if pc else probs

    # what the runtime reads of the input block (checked by `load`)
    @property
    def input_size(self) -> int:
        return int(self.input["shape"][-1])

    @property
    def mean(self) -> float:
        return float(self.input["mean"])

    @property
    def std(self) -> float:
        return float(self.input["std"])

    def save(self, path: str | Path) -> None:
        atomic_write_json(path, asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> ModelCard:
        """Read and check a card; `ModelError` (one line naming the file) for anything the runtime cannot use."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ModelError(f"{path}: no such model card") from None
        except UnicodeDecodeError:
            raise ModelError(f"{path}: not a model card (not UTF-8 text)") from None
        except OSError as exc:
            raise ModelError(f"{path}: cannot read the model card ({exc.strerror or exc})") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelError(f"{path}: not a model card (not JSON: {exc.msg} at line {exc.lineno})") from None
        return cls.from_dict(data, str(path))

    @classmethod
    def from_dict(cls, data, where: str = "model card") -> ModelCard:
        if not isinstance(data, dict):
            raise ModelError(f"{where}: not a model card (a JSON {_json_kind(data)}, not an object)")
        missing = [k for k in REQUIRED if k not in data]
        if missing:
            raise ModelError(f"{where}: not a model card (missing {', '.join(missing)})")
        for key in ("name", "architecture"):
            if not isinstance(data[key], str):
                raise ModelError(f"{where}: '{key}' must be a string, not {_json_kind(data[key])}")
        classes = data["classes"]
        if not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c for c in classes):
            raise ModelError(f"{where}: 'classes' must be a non-empty list of class names (strings)")
        if len(set(classes)) != len(classes):
            raise ModelError(f"{where}: 'classes' names a class twice")
        tta = data.get("tta") or "none"
        preprocessing.check_tta(tta, f"{where}: tta", ModelError)
        for key in ("metrics", "training", "output", "int8"):
            if key in data and not isinstance(data[key], dict):
                raise ModelError(f"{where}: '{key}' must be an object, not {_json_kind(data[key])}")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["tta"] = tta
        known["input"] = check_input(data.get("input"), where)
        known["prior_correction"] = check_prior_correction(data.get("prior_correction"), len(classes), where)
        if known.get("notes") is None:
            known["notes"] = ""
        return cls(**known)


def _json_kind(value) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number" if isinstance(value, (int, float)) else type(value).__name__)


def check_input(block, where: str) -> dict:
    """The card's `input` block (absent: the standard one) if the runtime can honour it, else ModelError."""
    if block is None:
        return default_input()
    if not isinstance(block, dict):
        raise ModelError(f"{where}: 'input' must be an object, not {_json_kind(block)}")
    merged = {**default_input(), **block}
    if merged["name"] != INPUT_NAME:
        raise ModelError(f"{where}: input name {merged['name']!r}: the runtime feeds {INPUT_NAME!r}")
    shape = merged["shape"]
    ok = (isinstance(shape, list) and len(shape) == 4 and shape[1] == 1
          and all(isinstance(s, int) and not isinstance(s, bool) for s in shape[2:]) and shape[2] == shape[3]
          and 8 <= shape[2] <= 1024)
    if not ok:
        raise ModelError(f"{where}: input shape {shape!r}: the runtime feeds [N, 1, S, S] grey squares (8 <= S <= 1024)")
    for key, want in (("dtype", "float32"), ("color", "gray"), ("scale", "pixel / 255")):
        if merged[key] != want:
            raise ModelError(f"{where}: input {key} {merged[key]!r}: the runtime feeds {want!r}")
    for key in ("mean", "std"):
        v = merged[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ModelError(f"{where}: input {key} {v!r} must be a number")
    if merged["std"] <= 0:
        raise ModelError(f"{where}: input std {merged['std']!r} must be above 0")
    return merged


MAX_TAU = 5.0  # beyond this a correction would swamp what the network says


def prior_adjusted(probs, prior, tau: float):
    """p * prior^(-tau), renormalised per row (post-hoc logit adjustment); tau 0 returns `probs` unchanged."""
    import numpy as np

    if not tau:
        return probs
    q = np.asarray(probs, dtype=np.float64) * _prior_weights(tuple(prior), float(tau))
    return (q / np.maximum(q.sum(axis=-1, keepdims=True), 1e-300)).astype(np.float32)


@functools.lru_cache(maxsize=64)
def _prior_weights(prior: tuple, tau: float):
    """prior^(-tau) as a float64 vector, computed once per card (the run time applies it to every call)."""
    import numpy as np

    w = np.asarray(prior, dtype=np.float64) ** -tau
    w.flags.writeable = False
    return w


def check_prior_correction(block, n_classes: int, where: str) -> dict | None:
    """The card's `prior_correction` block (absent or null: none) if the runtime can apply it, else ModelError."""
    if block is None:
        return None
    if not isinstance(block, dict):
        raise ModelError(f"{where}: 'prior_correction' must be an object, not {_json_kind(block)}")
    tau, prior = block.get("tau"), block.get("prior")
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not math.isfinite(tau) or not 0 <= tau <= MAX_TAU:
        raise ModelError(f"{where}: prior_correction tau {tau!r} must be a number from 0 to {MAX_TAU:g}")
    if not isinstance(prior, list) or len(prior) != n_classes:
        got = f"{len(prior)} entries" if isinstance(prior, list) else _json_kind(prior)
        raise ModelError(f"{where}: prior_correction prior must list one share per class ({n_classes}), not {got}")
    if not all(not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in prior):
        raise ModelError(f"{where}: prior_correction prior {prior!r} must hold numbers above 0")
    return {**block, "tau": float(tau), "prior": [float(v) for v in prior]}
