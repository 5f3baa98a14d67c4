"""Export a trained model to ONNX (softmax included) with its model card, and check the two agree."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import shlex
import warnings
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ferkit.modelcard import INPUT_NAME, OUTPUT_NAME, RUNTIME_TTA, ModelCard
from ferkit.models import load_architecture
from ferkit.preprocessing import INPUT_SIZE
from ferkit.train.checkpoint import atomic_save, load_weights, read_metadata
from ferkit.train.loop import AUX_HEAD


class WithSoftmax(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).softmax(dim=1)


def run_heads(spec: dict) -> list[dict]:
    """The heads of a run's model: one for a plain run; two (FER2013, FER+) for a joint run."""
    return spec.get("heads") or [{"name": "main", "classes": spec.get("classes"), "weights": "best.safetensors"}]


def pick_head(spec: dict, head: str | None) -> dict:
    heads = run_heads(spec)
    if head is None:
        return heads[0]
    for h in heads:
        if h["name"] == head:
            return h
    raise ValueError(f"head {head!r}: this run has {', '.join(h['name'] for h in heads)}")


def load_run_model(run: str | Path, weights: str | None = None, head: str | None = None) -> tuple[nn.Module, dict]:
    """Rebuild a run's model from model.json and load its weights; returns (model in eval mode, spec).

    For a joint run, `head` (default: the first, FER2013) picks one head: the result is a plain
    single-head model of the same architecture, loaded from that head's best checkpoint, and the
    spec lists that head's classes.
    """
    run = Path(run)
    model, spec = load_architecture(run / "model.json")
    chosen = pick_head(spec, head)
    load_weights(model, run / (weights or chosen["weights"]))
    if "heads" not in spec:
        return model.eval(), spec
    start = 0
    for h in spec["heads"]:
        if h is chosen:
            break
        start += len(h["classes"])
    single = single_head(model, spec, start, len(chosen["classes"]))
    return single.eval(), {**spec, "num_classes": len(chosen["classes"]), "classes": list(chosen["classes"]),
                           "head": chosen["name"], "heads": None}


def single_head(model: nn.Module, spec: dict, start: int, size: int) -> nn.Module:
    """The same architecture with `size` outputs, its last linear layer cut to outputs start..start+size."""
    from ferkit.models import create_model

    last = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    state = {}
    for key, value in model.state_dict().items():
        if key in (f"{last}.weight", f"{last}.bias"):
            value = value[start:start + size]
        state[key] = value
    single = create_model(spec["name"], size, **spec.get("kwargs", {}))
    single.load_state_dict(state)
    return single


def load_shipped_torch(path: str | Path) -> tuple[nn.Module, list[str]]:
    """The torch model behind a shipped ONNX file, from the NAME.safetensors export wrote beside it."""
    from ferkit.models import create_model

    meta = read_metadata(path)
    spec = meta["spec"]
    model = create_model(spec["name"], spec["num_classes"], **spec.get("kwargs", {}))
    load_weights(model, path)
    return model.eval(), list(meta["classes"])


def ensemble_of(parts: list[tuple[nn.Module, dict]]) -> tuple[nn.Module, dict]:
    """One `ensemble` model (mean probabilities) from (model, spec) pairs with the same classes."""
    from ferkit.models import create_model

    classes = list(parts[0][1]["classes"])
    for _, spec in parts[1:]:
        if list(spec["classes"]) != classes:
            raise ValueError(f"ensemble members must share classes: {classes} vs {list(spec['classes'])}")
    members = [{"name": spec["name"], "kwargs": spec.get("kwargs", {})} for _, spec in parts]
    model = create_model("ensemble", len(classes), members=members)
    for dst, (src, _) in zip(model.members, parts):
        dst.load_state_dict(src.state_dict())
    return model.eval(), {**parts[0][1], "name": "ensemble", "kwargs": {"members": members}}


def soup_of(model: nn.Module, others: list[nn.Module]) -> nn.Module:
    """A uniform weight soup: `model` with every floating-point weight and BatchNorm statistic replaced by
    the mean over it and `others` (same architecture and head). One net, so no cost at run time; it works
    for nets fine-tuned from one shared ancestor, which sit in one basin of the loss."""
    states = [model.state_dict()] + [o.state_dict() for o in others]
    for other in states[1:]:
        if set(other) != set(states[0]) or any(other[k].shape != v.shape for k, v in states[0].items()):
            raise ValueError("soup members must share one architecture and head (their weights differ in shape)")
    model.load_state_dict({k: torch.stack([s[k].float() for s in states]).mean(0).to(v.dtype)
                           if v.is_floating_point() else v for k, v in states[0].items()})
    return model.eval()


def _soup_member(source: Path, run: Path, head: str | None) -> nn.Module:
    """A --soup member: a run folder (its best checkpoint for `head`) or a weights file of the same
    architecture as `run` (e.g. a joint net's full weights, cut to `head`)."""
    if source.is_dir():  # export_run has checked it is a run folder
        return load_run_model(source, head=head)[0]
    if not source.is_file():
        raise FileNotFoundError(f"{source}: --soup takes a run folder or a weights file; neither exists")
    try:
        return load_run_model(run, weights=str(source.resolve()), head=head)[0]
    except (RuntimeError, KeyError) as exc:  # load_state_dict: missing/unexpected keys or shapes
        raise ValueError(f"{source}: not weights of {run}'s architecture ({str(exc).splitlines()[0]})") from None


def export_onnx(model: nn.Module, path: str | Path, opset: int = 17, half: bool = False) -> Path:
    """Write `model` + softmax as ONNX. half: store the weights as float16 (half the file; compute stays
    float32), after `round_to_half(model)` so torch and ONNX keep identical weights."""
    from torch.onnx import TrainingMode

    path = Path(path)
    wrapped = WithSoftmax(model.float().eval().to(memory_format=torch.contiguous_format))
    dummy = torch.zeros(2, 1, INPUT_SIZE, INPUT_SIZE)
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated, not broken: keep the CLI quiet
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            wrapped, (dummy,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}, opset_version=opset, dynamo=False,
            # eval mode folds batch norm into the convolutions, which would leave weights float16 cannot hold
            # exactly; PRESERVE keeps the (eval-mode) BatchNormalization nodes for onnxruntime to fold in float32
            **({"training": TrainingMode.PRESERVE, "do_constant_folding": False} if half else {}),
        )
    if half:
        store_weights_as_half(path)
    return path


def round_to_half(model: nn.Module) -> nn.Module:
    """Round every float weight and buffer to the nearest float16 value (kept as float32), in place."""
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            if t.is_floating_point():
                t.copy_(t.half().float())
    return model


def store_weights_as_half(path: Path) -> None:
    """Rewrite an ONNX file's float32 initializers as float16 + a Cast back to float32 (lossless for
    weights `round_to_half` made). onnxruntime folds the casts when it loads the model, so it runs
    exactly as fast as the float32 file."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.load(str(path))
    graph, casts = m.graph, []
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT or np.prod(init.dims) < 16:
            continue
        value = numpy_helper.to_array(init)
        if not np.array_equal(value.astype(np.float16).astype(np.float32), value):
            raise ValueError(f"{path}: weight {init.name} is not float16-exact; round_to_half the model first")
        half = numpy_helper.from_array(value.astype(np.float16), name=f"{init.name}__f16")
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT))
        init.CopyFrom(half)
    nodes = casts + list(graph.node)  # casts first: the graph stays topologically sorted
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


def max_disagreement(model: nn.Module, onnx_path: str | Path, inputs: np.ndarray,
                     batch: int = 512) -> tuple[float, int]:
    """(largest |p_torch - p_onnx|, number of argmax disagreements) on normalised inputs (N, 1, 48, 48)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    model = model.float().eval()
    p_torch, p_onnx = [], []
    for i in range(0, len(inputs), batch):
        x = inputs[i:i + batch]
        with torch.no_grad():
            p_torch.append(model(torch.from_numpy(x)).softmax(1).numpy())
        p_onnx.append(sess.run([OUTPUT_NAME], {INPUT_NAME: x})[0])
    p_torch, p_onnx = np.concatenate(p_torch), np.concatenate(p_onnx)
    return float(np.abs(p_torch - p_onnx).max()), int((p_torch.argmax(1) != p_onnx.argmax(1)).sum())


def sha256(path: str | Path) -> str:
    """A file's sha256, remembered per (path, size, mtime): cards of several runs on one data file hash it once."""
    path = Path(path)
    st = path.stat()
    return _sha256(str(path.resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(device: str | torch.device | None = None) -> str:
    """The machine in words: the GPU when training runs on CUDA, else the CPU model and torch's thread count."""
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda":
        return f"{torch.cuda.get_device_name(dev)} (CUDA {torch.version.cuda}), host {cpu_name()}"
    return f"{cpu_name()}, {torch.get_num_threads()} torch threads of {os.cpu_count()} CPUs"


def describe_architecture(spec: dict) -> str:
    """'fer-resnet-s', or for an ensemble 'ensemble(fer-resnet-s, fer-resnet-s)'."""
    if spec["name"] != "ensemble":
        return spec["name"]
    return f"ensemble({', '.join(describe_architecture(m) for m in spec['kwargs']['members'])})"


def make_card(name: str, spec: dict, tta: str, metrics: dict, training: dict, notes: str = "") -> ModelCard:
    return ModelCard(name=name, classes=list(spec["classes"]), architecture=describe_architecture(spec), tta=tta,
                     metrics=metrics, training=training, notes=notes)


# ---------------------------------------------------------------------------- shipping a run
def training_command(cfg) -> str:
    """The `ferkit train` command line that rebuilds `cfg` (a TrainConfig), options at their defaults left out.

    Settings the command line cannot express (e.g. model_kwargs) make it `--config <the run's config.json>`.
    """
    import inspect

    from ferkit.apps.cli_train import train as cli_train
    from ferkit.train.config import TrainConfig

    params = inspect.signature(cli_train).parameters
    defaults = TrainConfig()
    args = ["ferkit", "train", str(cfg.data)]
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if f.name == "data":
            continue
        if f.name == "teachers":  # a repeatable option: --teacher A --teacher B
            args += [a for t in value for a in ("--teacher", str(t))]
            continue
        if f.name not in params:
            if value != getattr(defaults, f.name):
                return shlex.join(["ferkit", "train", str(cfg.data), "--config", str(Path(cfg.out) / "config.json")])
            continue
        cli_default = params[f.name].default
        if f.name not in ("model", "out") and value == cli_default:
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + f.name.replace("_", "-"))
        elif value is None:
            continue
        elif isinstance(value, (list, tuple)):
            args += [flag, ",".join(map(str, value))]
        else:
            args += [flag, repr(value) if isinstance(value, float) else str(value)]
    return shlex.join(args)


def data_files(cfg_data: str | Path, ferplus: str | Path | None) -> dict[str, str]:
    """sha256 of the data file(s) a run read: the FER2013 CSV (and FER+ votes), or a digest of a folder tree."""
    from ferkit.data import find_fer2013_csv

    src = Path(cfg_data)
    out: dict[str, str] = {}
    csv_path = src if src.is_file() else find_fer2013_csv(src) if src.is_dir() else None
    if csv_path is not None:
        out[csv_path.name] = sha256(csv_path)
    elif src.is_dir():  # a folder tree: sha256 over "relative path  sha256" lines, sorted
        lines = sorted(f"{p.relative_to(src)}  {sha256(p)}" for p in src.rglob("*") if p.is_file())
        out[f"{src.name}/ (tree of {len(lines)} files)"] = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    if ferplus:
        votes = Path(ferplus) if not isinstance(ferplus, bool) else (csv_path.parent / "fer2013new.csv")
        if votes.is_file():
            out[votes.name] = sha256(votes)
    return out


RECIPE_KEYS = ("command", "epochs", "best_epoch", "wall_seconds", "init")  # what a card keeps of an earlier run


def training_info(run: str | Path, head: str | None = None) -> dict:
    """What a model card says about how the model was made, from the run folder's own records.

    For the FER+ head of a joint run, the best epoch is the one that head was chosen at.
    """
    from ferkit.train.checkpoint import read_metadata
    from ferkit.train.config import TrainConfig

    run = Path(run)
    info: dict = {}
    cfg = TrainConfig.load(run / "config.json") if (run / "config.json").is_file() else None
    if cfg is not None:
        info["command"] = training_command(cfg)
        info["config"] = asdict(cfg)
        info["data_sha256"] = data_files(cfg.data, cfg.ferplus or cfg.aux_ferplus)
        info["train_split"], info["val_split"] = cfg.train_split, cfg.val_split
    state = None
    if (run / "last.safetensors").is_file():
        state = read_metadata(run / "last.safetensors").get("state")
    history = state["history"] if state else _read_history(run / "history.csv")
    if history:
        info["epochs"] = len(history)
        key = f"{AUX_HEAD}_val_acc" if head == AUX_HEAD else "val_acc"
        best = max(history, key=lambda h: float(h[key]))
        info["best_epoch"], info["best_val_acc"] = int(best["epoch"]), float(best[key])
        if head is not None:
            info["head"] = head
        info["wall_seconds"] = round(float(state["wall_seconds"]) if state else sum(float(h["seconds"]) for h in history), 1)
    if cfg is not None and cfg.init:  # a warm restart: the run it started from is part of the recipe
        before = _init_training_info(Path(cfg.init), run)
        if before:
            info["init"] = {k: before[k] for k in RECIPE_KEYS if k in before}
            if "wall_seconds" in info and "wall_seconds" in before:
                earlier = before.get("wall_seconds_with_init", before["wall_seconds"])
                info["wall_seconds_with_init"] = round(info["wall_seconds"] + earlier, 1)
    if cfg is not None and cfg.teachers:  # distilled: the teachers are part of the recipe too
        info["teachers"] = [_member_record(t, run) for t in cfg.teachers]
        info["distill_weight"] = cfg.distill_weight
    sessions = _run_sessions(run)
    if sessions:
        info["hardware"] = sorted({s["hardware"] for s in sessions})
        info["precision"] = sorted({s.get("precision", "?") for s in sessions})
        info["torch"] = sorted({s.get("torch", "?") for s in sessions})
        info["sessions"] = len(sessions)
    else:
        info["hardware"] = [f"{hardware()} (the exporting machine: the run recorded none)"]
        info["torch"] = [torch.__version__]
    return info


def _member_record(source: str | Path, run: Path, head: str | None = None) -> dict:
    """What a card keeps of a run whose weights went into this model (a teacher, a soup member)."""
    made = _init_training_info(Path(source), run, head)
    return {"weights": str(source), **{k: made[k] for k in RECIPE_KEYS if k in made}}


def _init_training_info(init: Path, run: Path, head: str | None = None) -> dict:
    """How the --init weights were made: their run folder's records, or else the model card beside a
    weights file (NAME.json next to NAME.safetensors, as a shipped model has), so a chain of warm
    restarts keeps every stage's command and time."""
    folder = init if init.is_dir() else init.parent
    if (folder / "config.json").is_file() and folder.resolve() != run.resolve():
        return training_info(folder, head)
    card = init.with_suffix(".json")
    if init.is_file() and card.is_file():
        try:
            return dict(ModelCard.load(card).training or {})
        except (ValueError, TypeError):  # not JSON, or not a model card
            return {}
    return {}


def _read_history(path: Path) -> list[dict]:
    import csv

    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _run_sessions(run: Path) -> list[dict]:
    path = run / "runinfo.json"
    if not path.is_file():
        return []
    try:
        return list(json.loads(path.read_text()).get("sessions", []))
    except (ValueError, AttributeError):
        return []


def require_run(folder: str | Path) -> None:
    folder = Path(folder)
    if not (folder / "model.json").is_file() or not (folder / "best.safetensors").is_file():
        raise FileNotFoundError(f"{folder}: not a training run folder (model.json and best.safetensors expected)")


def export_run(run: str | Path, name: str, out: str | Path, tta: str = "none", data: str | Path | None = None,
               ferplus: str | Path | None = None, check_faces: int | None = None, tolerance: float = 1e-4,
               notes: str = "", reports: bool = True, head: str | None = None,
               ensemble: list[str | Path] | tuple = (), half: bool = False, soup: list[str | Path] | tuple = ()) -> dict:
    """Ship a training run: ONNX (softmax included) + model card, checked against torch and scored.

    1. export best.safetensors to `out/NAME.onnx`, and the same weights as `out/NAME.safetensors`
       (architecture spec in its metadata: `load_shipped_torch` rebuilds the torch model from it);
    2. compare ONNX with torch on the test split's faces (PrivateTest; all of them, or the first
       `check_faces`): every argmax must agree and every probability be within `tolerance`, else
       ValueError;
    3. write the card `out/NAME.json` (classes, input contract, TTA, training command, data sha256,
       wall time, hardware), then score the ONNX file through `ferkit.evaluation` (the same path as
       `ferkit evaluate`) on PublicTest and PrivateTest and put those figures in the card; the reports
       (JSON, confusion and reliability PNGs) go to `RUN/eval/NAME/SPLIT`, never beside the ONNX file,
       so exporting into the package's weights folder ships only the model and its card.

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
    Returns paths, the check figures and the card.
    """
    from ferkit.data import load_dataset
    from ferkit.evaluation import evaluate
    from ferkit.preprocessing import normalize, tta_cost
    from ferkit.train.config import TrainConfig

    run, out = Path(run), Path(out)
    if tta not in (*RUNTIME_TTA, "auto"):
        raise ValueError(f"tta {tta!r}: a model card supports {' or '.join(RUNTIME_TTA)} (what the runtime can "
                         "apply), or 'auto' to choose between them on the validation split")
    if ensemble and soup:
        raise ValueError("choose --ensemble (mean probabilities) or --soup (mean weights), not both")
    for folder in (run, *ensemble, *(m for m in soup if Path(m).is_dir())):  # before anything is read or written
        require_run(folder)
    cfg = TrainConfig.load(run / "config.json") if (run / "config.json").is_file() else TrainConfig()
    data = data or cfg.data
    head_name = pick_head(json.loads((run / "model.json").read_text()), head)["name"] if head else None
    if head_name == AUX_HEAD:
        ferplus = ferplus if ferplus is not None else cfg.aux_ferplus
    ferplus = ferplus if ferplus is not None else cfg.ferplus
    if not data:
        raise ValueError(f"{run}: no data recorded in config.json; pass the data to score on")
    faces = load_dataset(data, ferplus=ferplus)
    if tta == "auto" and cfg.val_split not in faces.split_names():  # before anything is written
        raise ValueError(f"--tta auto needs the run's validation split {cfg.val_split!r} in {data}")
    model, spec = load_run_model(run, head=head_name)
    if ensemble:
        model, spec = ensemble_of([(model, spec)] + [load_run_model(m, head=head_name) for m in ensemble])
    if soup:
        model = soup_of(model, [_soup_member(Path(m), run, head_name) for m in soup])
    if half:
        round_to_half(model)

    out.mkdir(parents=True, exist_ok=True)
    onnx_path, card_path = out / f"{name}.onnx", out / f"{name}.json"
    export_onnx(model, onnx_path, half=half)

    present = faces.split_names()
    check_split = next((s for s in ("PrivateTest", cfg.val_split) if s in present), present[0])
    sample = faces.split(check_split).images[:check_faces]
    max_dp, n_disagree = max_disagreement(model, onnx_path, normalize(sample))
    if n_disagree or max_dp >= tolerance:
        raise ValueError(f"{onnx_path}: ONNX and torch disagree on {check_split} faces "
                         f"({n_disagree} argmax differences of {len(sample)}, max |dp| {max_dp:.2e})")

    weights = {k: v.half() if half and v.is_floating_point() else v for k, v in model.state_dict().items()}
    atomic_save(weights, out / f"{name}.safetensors",
                {"spec": {k: spec[k] for k in ("name", "num_classes", "kwargs")}, "classes": list(spec["classes"])})
    training = training_info(run, head_name)
    if ensemble:
        training["ensemble_members"] = [training_info(m, head_name) for m in ensemble]
        training["wall_seconds_all_members"] = round(training.get("wall_seconds", 0) + sum(
            t.get("wall_seconds", 0) for t in training["ensemble_members"]), 1)
    if soup:
        training["soup_members"] = [_member_record(m, run, head_name) for m in soup]
    if half:
        training["weights_dtype"] = "float16"
    card = make_card(name, spec, "none" if tta == "auto" else tta, metrics={}, training=training, notes=notes)
    card.training["onnx_check"] = {"split": check_split, "faces": len(sample), "max_abs_prob_diff": max_dp,
                                   "argmax_disagreements": n_disagree}
    card.save(card_path)  # the runtime needs the card beside the ONNX file to score it
    if tta == "auto":
        scores = {mode: round(evaluate(onnx_path, data, split=cfg.val_split, tta=mode, ferplus=ferplus,
                                       faces=faces, out=None)["accuracy"], 5) for mode in RUNTIME_TTA}
        tta = max(RUNTIME_TTA, key=lambda mode: (scores[mode], -tta_cost(mode)))
        card.tta = tta
        card.training["tta_choice"] = {"split": cfg.val_split, "accuracy": scores, "chosen": tta}
    evaluated = {}
    for split in ("PublicTest", "PrivateTest"):
        if split not in faces.split_names():
            continue
        m = evaluate(onnx_path, data, split=split, tta=tta, ferplus=ferplus, faces=faces,
                     out=run / "eval" / name / split if reports else None)
        evaluated[split] = m
        card.metrics[split] = {
            "accuracy": round(m["accuracy"], 5), "tta": tta, "faces": m["n"],
            "macro_f1": round(m["macro_f1"], 5), "ece": round(m["ece"], 5),
            "recall": {c: round(v["recall"], 4) for c, v in m["per_class"].items()},
            "protocol": "FER+ majority vote" if ferplus else "FER2013 labels",
        }
    card.save(card_path)
    return {"onnx": onnx_path, "card": card_path, "card_data": card, "size_bytes": onnx_path.stat().st_size,
            "check": card.training["onnx_check"], "metrics": evaluated}
