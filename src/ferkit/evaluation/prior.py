"""Post-hoc prior correction (logit adjustment, Menon et al. 2021): choosing it and writing it into a model card.

A classifier trained on FER2013's skewed classes (happy ~25%, disgust ~1.5%) leans towards the frequent ones.
Dividing its probabilities by the training prior raised to tau, p' = p * prior^(-tau) renormalised, moves
predictions towards rare classes: tau 0 leaves them alone, tau 1 is the full correction. The card holds
tau and the prior (`ModelCard.prior_correction`); the run time applies it after TTA averaging.

The prior is the Training split's class distribution (for FER+ the mean vote distribution of Training).
tau is chosen on PublicTest, at the card's TTA, by a rule fixed before any figure is seen (`RULE`);
PrivateTest is only scored afterwards, with the chosen tau, for the card. The averaged probabilities of
each split are computed once and cached (`.npy`, no pickle) so every tau of the grid reuses them.
"""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
from pathlib import Path

import numpy as np

from ferkit.errors import DataError, UsageError
from ferkit.evaluation.metrics import align_classes, compute_metrics
from ferkit.evaluation.predictor import Predictor
from ferkit.evaluation.score import SAMPLE_EVERY, card_metrics, evaluate_faces, every_nth
from ferkit.fileio import atomic_write_bytes, atomic_write_json, ensure_dir
from ferkit.modelcard import ModelCard, prior_adjusted

TAU_GRID = tuple(round(0.1 * i, 1) for i in range(11))  # 0, 0.1, ..., 1.0
ACCURACY_SLACK = 0.003  # 0.3 points
CHOSEN_ON = "PublicTest"
RULE = ("the tau in {0, 0.1, ..., 1.0} with the best balanced accuracy among those whose accuracy is within "
        "0.3 points of the best accuracy over the grid (PublicTest, the card's TTA); ties go to the smaller tau")
SCORED_SPLITS = ("PublicTest", "PrivateTest")  # the splits a card reports


def default_cache_dir() -> Path:
    return Path(tempfile.gettempdir()) / "ferkit-prior"


# ---------------------------------------------------------------------------- the prior
def training_prior(faces, model_classes, split: str = "Training") -> tuple[list[float], str]:
    """The class distribution of `split` in the model's class order, and what it is: the mean vote distribution
    where the data has votes (FER+), else the share of each label. DataError if a model class has no share."""
    if split not in faces.split_names():
        raise DataError(f"the prior needs the {split} split; the data has {', '.join(faces.split_names())}")
    train = faces.split(split)
    if train.soft_labels is not None:
        shares, source = train.soft_labels.astype(np.float64).mean(axis=0), f"{split} mean vote distribution"
    else:
        counts = np.bincount(train.labels, minlength=len(train.class_names)).astype(np.float64)
        shares, source = counts / max(1.0, counts.sum()), f"{split} label shares"
    align, _, _ = align_classes(train.class_names, train.labels, model_classes)
    prior = np.zeros(len(model_classes))
    for data_col, model_col in enumerate(align.to_model):
        if model_col >= 0:
            prior[model_col] += shares[data_col]
    missing = [c for c, v in zip(model_classes, prior) if v <= 0]
    if missing:
        raise DataError(f"no {split} faces of {', '.join(missing)}: the prior needs a share for every model class")
    prior = prior / prior.sum()
    return [round(float(v), 6) for v in prior], source


# ---------------------------------------------------------------------------- the choice
def tau_grid(probs: np.ndarray, labels: np.ndarray, prior, classes, grid=TAU_GRID) -> list[dict]:
    """Accuracy, balanced accuracy and macro-F1 of the corrected probabilities for every tau of `grid`."""
    rows = []
    for tau in grid:
        m = compute_metrics(prior_adjusted(probs, prior, tau), labels, classes)
        rows.append({"tau": float(tau), "accuracy": round(m["accuracy"], 5),
                     "balanced_accuracy": round(m["balanced_accuracy"], 5), "macro_f1": round(m["macro_f1"], 5)})
    return rows


def choose_tau(rows: list[dict]) -> float:
    """`RULE` over `tau_grid`'s rows: best balanced accuracy within 0.3 pt of the best accuracy; smaller tau on ties."""
    best = max(r["accuracy"] for r in rows)
    near = [r for r in rows if r["accuracy"] >= best - ACCURACY_SLACK - 1e-9]
    return min(near, key=lambda r: (-r["balanced_accuracy"], r["tau"]))["tau"]


# ---------------------------------------------------------------------------- cached probabilities
def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:16]


def raw_probabilities(pred: Predictor, faces, tta: str, cache_dir: str | Path | None = None,
                      progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The model's TTA-averaged probabilities without any prior correction (exactly as `evaluate` computes
    them), and the labels as model columns; cached under `cache_dir` by model file, faces, labels and TTA."""
    _, keep, y = align_classes(faces.class_names, faces.labels, pred.classes)
    if not keep.any():
        raise DataError(f"none of the data's classes ({', '.join(faces.class_names)}) is known to the model")
    key = _digest(Path(pred.path).read_bytes(), faces.images.tobytes(), y.tobytes(), tta.encode(),
                  ",".join(pred.classes).encode())
    path = Path(cache_dir or default_cache_dir()) / f"{Path(pred.path).stem}-{tta}-{len(y)}-{key}.npy"
    if path.is_file():
        try:
            probs = np.load(path, allow_pickle=False)
            if probs.shape == (len(y), len(pred.classes)):
                return probs, y
        except (OSError, ValueError):
            pass  # computed again below
    _, probs = evaluate_faces(pred.predict, faces, pred.classes, tta, progress=progress)  # the bare function
    buf = io.BytesIO()
    np.save(buf, probs, allow_pickle=False)
    ensure_dir(path.parent)
    atomic_write_bytes(path, buf.getvalue(), sync=False)
    return probs, y


# ---------------------------------------------------------------------------- the whole calibration
def _figures(m: dict) -> dict:
    return {k: round(m[k], 5) for k in ("accuracy", "balanced_accuracy", "macro_f1")}


def _sample_like(m: dict, every: int) -> dict:
    return {"data": {"sample_every": every}, "n": m["n"], "accuracy": m["accuracy"]}


def calibrate_prior(pred: Predictor, faces, ferplus: bool, cache_dir: str | Path | None = None,
                    score: bool = True, progress: bool = False) -> dict:
    """Choose tau on PublicTest (`RULE`, the card's TTA); then, if it is above 0 and `score`, score the card's
    splits (PublicTest, PrivateTest: all faces and every 8th) with and without it, for the card.

    Returns {"tau", "correction": the card block, "grid": rows, "metrics": {split: card figures with the
    correction}, "uncorrected": {split: figures without}}; nothing is written (`write_prior_correction` does)."""
    card = ModelCard.load(Path(pred.path).with_suffix(".json"))
    protocol = "FER+ majority vote" if ferplus else "FER2013 labels"
    theirs = {m.get("protocol") for m in card.metrics.values() if isinstance(m, dict)} - {None}
    if theirs and theirs != {protocol}:
        hint = "pass --ferplus with the FER+ votes" if not ferplus else "leave out --ferplus"
        raise UsageError(f"{card.name}'s figures are against {', '.join(sorted(theirs))}, not {protocol}: {hint}")
    if CHOSEN_ON not in faces.split_names():
        raise DataError(f"tau is chosen on {CHOSEN_ON}; the data has {', '.join(faces.split_names())}")
    tta = card.tta
    prior, source = training_prior(faces, pred.classes)
    probs, y = raw_probabilities(pred, faces.split(CHOSEN_ON), tta, cache_dir, progress)
    grid = tau_grid(probs, y, prior, pred.classes)
    tau = choose_tau(grid)
    metrics, uncorrected = {}, {}
    for split in (s for s in SCORED_SPLITS if s in faces.split_names() and tau > 0 and score):
        subset = faces.split(split)
        full = raw_probabilities(pred, subset, tta, cache_dir, progress)
        sample = raw_probabilities(pred, every_nth(subset, SAMPLE_EVERY), tta, cache_dir, progress)
        before = compute_metrics(*full, pred.classes)
        after = compute_metrics(prior_adjusted(full[0], prior, tau), full[1], pred.classes)
        after_sample = compute_metrics(prior_adjusted(sample[0], prior, tau), sample[1], pred.classes)
        metrics[split] = card_metrics(after, _sample_like(after_sample, SAMPLE_EVERY), tta, ferplus)
        uncorrected[split] = _figures(before)
    correction = {"tau": tau, "prior": prior, "prior_source": source, "chosen_on": CHOSEN_ON, "tta": tta,
                  "rule": RULE, "grid": grid, "uncorrected": uncorrected}
    return {"tau": tau, "correction": correction, "grid": grid, "metrics": metrics, "uncorrected": uncorrected}


def write_prior_correction(pred: Predictor, result: dict) -> Path:
    """Store the chosen correction in the card beside the model, with the card's figures scored under it.

    The card's JSON is read again and only `prior_correction` and those figures change (whatever else it
    holds stays as it is); the amended card must load before it replaces the old one."""
    if not result["metrics"]:
        raise UsageError("the card's splits were not scored under the correction (tau 0, or a dry run): "
                         "nothing to write")
    card_path = Path(pred.path).with_suffix(".json")
    ModelCard.load(card_path)  # a readable card, or ModelError naming it
    data = json.loads(card_path.read_text(encoding="utf-8"))
    data["prior_correction"] = result["correction"]
    data.setdefault("metrics", {}).update(result["metrics"])
    ModelCard.from_dict(data, str(card_path))  # the card as written must load
    atomic_write_json(card_path, data)
    return card_path
