"""Shipping a training run: ONNX (softmax included) + its model card, checked against torch and scored.

The parts live apart: ONNX writing in `onnx_export`, ensembles and soups in `combine`, what the card says
about the model's making in `provenance`, the run folder in `run`; this module puts them in order.
"""

from __future__ import annotations

from pathlib import Path

from safetensors import SafetensorError
from torch import nn

from ferkit.errors import ConfigError, DataError, ModelError
from ferkit.evaluation.score import card_metrics
from ferkit.modelcard import RUNTIME_TTA, ModelCard
from ferkit.train.checkpoint import atomic_save, load_weights, read_metadata
from ferkit.train.combine import ensemble_of, soup_member, soup_of
from ferkit.train.onnx_export import export_onnx, max_disagreement, round_to_half
from ferkit.train.provenance import member_record, training_info
from ferkit.train.run import FERPLUS_HEAD, RunFolder


def load_shipped_torch(path: str | Path) -> tuple[nn.Module, list[str]]:
    """The torch model behind a shipped ONNX file, from the NAME.safetensors `export_run` wrote beside it."""
    model, spec = shipped_model(path)
    return model, spec["classes"]


def shipped_model(path: str | Path) -> tuple[nn.Module, dict]:
    """A shipped weights file's torch net (eval mode) and spec (architecture and classes, from its metadata);
    ModelError naming the file where it is not one."""
    from ferkit.models import create_model

    try:
        meta = read_metadata(path)
        spec = {**meta["spec"], "classes": list(meta["classes"])}
        model = create_model(spec["name"], spec["num_classes"], **spec.get("kwargs", {}))
        load_weights(model, path)
    except (KeyError, TypeError, ValueError, RuntimeError, SafetensorError) as exc:
        raise ModelError(f"{path}: not a shipped model's weights ({str(exc).splitlines()[0]})") from None
    return model.eval(), spec


def shipped_training(path: Path) -> dict:
    """The training record a new card takes over from a shipped model (NAME.safetensors, NAME.json beside it):
    the card's own, less the figures export measures anew, plus which file and bytes it started from."""
    from ferkit.fileio import sha256

    card = path.with_suffix(".json")
    if not card.is_file():
        raise ModelError(f"{path}: a shipped weights file needs its model card {card.name} beside it")
    try:
        training = dict(ModelCard.load(card).training or {})
    except (ValueError, TypeError, OSError) as exc:
        raise ModelError(f"{card}: not a model card ({str(exc).splitlines()[0]})") from None
    for key in ("onnx_check", "tta_choice", "weights_dtype"):
        training.pop(key, None)
    return {**training, "exported_from": {"weights": str(path), "sha256": sha256(path)}}


def recorded_config(path: Path, training: dict):
    """The TrainConfig a shipped model's card records (its data and splits), or ModelError naming the file."""
    from ferkit.train.config import TrainConfig

    recorded = training.get("config") or {}
    try:
        return TrainConfig(**{k: v for k, v in recorded.items() if k in TrainConfig.__dataclass_fields__})
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{path}: its card's training config cannot be read ({str(exc).splitlines()[0]})") from None


def describe_architecture(spec: dict) -> str:
    """'fer-resnet-s', or for an ensemble 'ensemble(fer-resnet-s, fer-resnet-s)'."""
    if spec["name"] != "ensemble":
        return spec["name"]
    return f"ensemble({', '.join(describe_architecture(m) for m in spec['kwargs']['members'])})"


def make_card(name: str, spec: dict, tta: str, metrics: dict, training: dict, notes: str = "") -> ModelCard:
    return ModelCard(name=name, classes=list(spec["classes"]), architecture=describe_architecture(spec), tta=tta,
                     metrics=metrics, training=training, notes=notes)


def export_run(run: str | Path, name: str, out: str | Path, tta: str = "none", data: str | Path | None = None,
               ferplus: str | Path | None = None, check_faces: int | None = None, tolerance: float = 1e-4,
               notes: str = "", reports: bool = True, head: str | None = None,
               ensemble: list[str | Path] | tuple = (), half: bool = False, soup: list[str | Path] | tuple = ()) -> dict:
    """Ship a training run: ONNX (softmax included) + model card, checked against torch and scored.

    1. export best.safetensors to `out/NAME.onnx`, and the same weights as `out/NAME.safetensors`
       (architecture spec in its metadata: `load_shipped_torch` rebuilds the torch model from it);
    2. compare ONNX with torch on the test split's faces (PrivateTest; all of them, or the first
       `check_faces`): every argmax must agree and every probability be within `tolerance`, else ModelError;
    3. write the card `out/NAME.json` (classes, input contract, TTA, training command, data sha256,
       wall time, hardware), then score the ONNX file through `ferkit.evaluation` (the same path as
       `ferkit evaluate`) on PublicTest and PrivateTest, and on every 8th face of each (the card's quick
       check), and put those figures in the card; the reports (JSON, confusion and reliability PNGs) go
       to `RUN/eval/NAME/SPLIT`, never beside the ONNX file, so exporting into the package's weights
       folder ships only the model and its card.

    `tta="auto"` scores the ONNX file on the run's validation split (PublicTest) with each mode the
    runtime can apply and keeps the best one (ties go to the mode with fewer views, the cheaper); the card
    records every mode's figure under `training.tta_choice`. PrivateTest plays no part in the choice.

    `data`/`ferplus` default to the run's own. `head` picks one head of a joint run (fer2013 or
    ferplus; default the first); the FER+ head is checked and scored against the FER+ votes.
    `ensemble`: more run folders whose best checkpoints (same head) are averaged with this run's, as
    one `ensemble` model and one ONNX graph; the card lists every member's training. `soup`: run folders
    (their checkpoint for the same head) or weights files whose weights are averaged with this run's
    into one net of the same size (`soup_of`); the card lists every member's training too. `half` stores the
    weights as float16 (ONNX and safetensors; see `export_onnx`): checks and scores use exactly those.
    `run` may also be a shipped model's weights file (NAME.safetensors, its card NAME.json beside it), e.g.
    to soup two shipped models: its card's training record carries over (less what export measures anew),
    `data` is that record's unless given, and no reports are written (the card keeps the figures).
    Returns paths, the check figures and the card.
    """
    from ferkit.data import load_dataset
    from ferkit.evaluation import SAMPLE_EVERY, evaluate, onnx_predictor
    from ferkit.fileio import ensure_dir
    from ferkit.preprocessing import normalize, tta_cost
    from ferkit.train.config import TrainConfig

    shipped = Path(run) if Path(run).is_file() else None
    folder, out = RunFolder(shipped.parent if shipped else run), Path(out)
    if tta not in (*RUNTIME_TTA, "auto"):
        raise ConfigError(f"--tta {tta!r}: a model card supports {' or '.join(RUNTIME_TTA)} (what the runtime can "
                          "apply), or 'auto' to choose between them on the validation split")
    if ensemble and soup:
        raise ConfigError("choose --ensemble (mean probabilities) or --soup (mean weights), not both")
    if shipped and (ensemble or head):
        raise ConfigError(f"{shipped}: a shipped weights file has one head and takes --soup, not --ensemble or --head")
    runs = ([] if shipped else [folder]) + [RunFolder(m) for m in ensemble]
    runs += [RunFolder(m) for m in soup if Path(m).is_dir()]
    for member in runs:
        member.require()  # before anything is read or written
    if shipped:  # its card and net, checked before the data is loaded
        made = shipped_training(shipped)
        cfg, first = recorded_config(shipped, made), shipped_model(shipped)
    else:
        cfg = folder.load_config() or TrainConfig()
    data = data or cfg.data
    head_name = folder.head(head).name if head else None
    if head_name == FERPLUS_HEAD.name:
        ferplus = ferplus if ferplus is not None else cfg.aux_ferplus
    ferplus = ferplus if ferplus is not None else cfg.ferplus
    if not data:
        raise DataError(f"{folder.path}: no data recorded in config.json; pass the data to score on")
    faces = load_dataset(data, ferplus=ferplus)
    if tta == "auto" and cfg.val_split not in faces.split_names():  # before anything is written
        raise DataError(f"--tta auto needs the run's validation split {cfg.val_split!r} in {data}")
    model, spec = first if shipped else folder.load_model(head=head_name)
    if ensemble:
        model, spec = ensemble_of([(model, spec)] + [RunFolder(m).load_model(head=head_name) for m in ensemble])
    if soup:
        model = soup_of(model, [shipped_model(m)[0] if shipped and Path(m).is_file()
                                else soup_member(Path(m), folder, head_name) for m in soup])
    if half:
        round_to_half(model)

    ensure_dir(out)
    onnx_path, card_path = out / f"{name}.onnx", out / f"{name}.json"
    export_onnx(model, onnx_path, half=half)

    present = faces.split_names()
    check_split = next((s for s in ("PrivateTest", cfg.val_split) if s in present), present[0])
    sample = faces.split(check_split).images[:check_faces]
    max_dp, n_disagree = max_disagreement(model, onnx_path, normalize(sample))
    if n_disagree or max_dp >= tolerance:
        raise ModelError(f"{onnx_path}: ONNX and torch disagree on {check_split} faces "
                         f"({n_disagree} argmax differences of {len(sample)}, max |dp| {max_dp:.2e})")

    weights = {k: v.half() if half and v.is_floating_point() else v for k, v in model.state_dict().items()}
    atomic_save(weights, out / f"{name}.safetensors",
                {"spec": {k: spec[k] for k in ("name", "num_classes", "kwargs")}, "classes": list(spec["classes"])})
    training = made if shipped else training_info(folder, head_name)
    if ensemble:
        training["ensemble_members"] = [training_info(m, head_name) for m in ensemble]
        training["wall_seconds_all_members"] = round(training.get("wall_seconds", 0) + sum(
            t.get("wall_seconds", 0) for t in training["ensemble_members"]), 1)
    if soup:
        training["soup_members"] = [member_record(m, folder, head_name) for m in soup]
    if half:
        training["weights_dtype"] = "float16"
    card = make_card(name, spec, "none" if tta == "auto" else tta, metrics={}, training=training, notes=notes)
    card.training["onnx_check"] = {"split": check_split, "faces": len(sample), "max_abs_prob_diff": max_dp,
                                   "argmax_disagreements": n_disagree}
    card.save(card_path)  # the runtime needs the card beside the ONNX file to score it
    predictor = onnx_predictor(onnx_path)

    def score(split: str, mode: str, **kw) -> dict:
        return evaluate(predictor, data, split=split, tta=mode, ferplus=ferplus, faces=faces, **kw)

    if tta == "auto":
        scores = {mode: round(score(cfg.val_split, mode)["accuracy"], 5) for mode in RUNTIME_TTA}
        tta = max(RUNTIME_TTA, key=lambda mode: (scores[mode], -tta_cost(mode)))
        card.tta = tta
        card.training["tta_choice"] = {"split": cfg.val_split, "accuracy": scores, "chosen": tta}
    evaluated = {}
    for split in ("PublicTest", "PrivateTest"):
        if split not in faces.split_names():
            continue
        m = score(split, tta, out=folder.export_reports(name, split) if reports and not shipped else None)
        evaluated[split] = m
        card.metrics[split] = card_metrics(m, score(split, tta, every=SAMPLE_EVERY), tta, ferplus)
    card.save(card_path)
    return {"onnx": onnx_path, "card": card_path, "card_data": card, "size_bytes": onnx_path.stat().st_size,
            "check": card.training["onnx_check"], "metrics": evaluated}
