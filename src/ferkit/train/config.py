"""Training settings, declared once: each field of `TrainConfig` carries its default and its help text.

`ferkit train`'s options are built from these fields (`ferkit.apps.cli_train`), recipes under `configs/`
are these fields as JSON (or TOML), and every run saves its own as `config.json`. A new option is one
line here: `name: type = setting(default, "help")`.

This module never imports torch: the CLI reads it to build `--help`.
"""

from __future__ import annotations

import json
import math
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

from ferkit.errors import ConfigError
from ferkit.fileio import atomic_write_json

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("plateau", "cosine", "onecycle", "none")
PRECISIONS = ("auto", "bf16", "fp32")
DEVICES = ("auto", "cpu", "cuda")  # and cuda:N
PER_EPOCH_SCHEDULES = ("plateau", "none")  # their shape does not depend on --epochs
RETIRED = frozenset({"eval_tta"})  # settings older runs saved that no longer mean anything


def setting(default, help: str, *, flag: str | None = None, short: str | None = None, kind: str | None = None,
            cli: bool = True, on_resume: str = "refuse"):
    """A TrainConfig field: its default, its help text and how the command line spells it.

    kind: "path" (a file or folder, kept as a string), "paths" (a repeatable path option), "classes" (a
    comma list of class names). on_resume: "apply" where a resumed run may take a new value (more epochs,
    other threads), "refuse" where a different value would make it another run.
    """
    meta = {"help": help, "flag": flag, "short": short, "kind": kind, "cli": cli, "on_resume": on_resume}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    # data
    data: str = setting("", "FER2013 CSV, folder tree, or folder holding fer2013.csv[.gz].", kind="path",
                        on_resume="apply")
    ferplus: str | None = setting(None, "FER+ votes file: 8 classes, vote distributions as soft targets.", kind="path")
    aux_ferplus: str | None = setting(None, "FER+ votes file for a second head: one net learns FER2013's 7 labels and "
                                            "FER+'s 8-class votes (export each with --head).", kind="path")
    aux_weight: float = setting(1.0, "Weight of the FER+ head's loss (with --aux-ferplus).")
    ferplus_neutral: float = setting(1.0, "Weight of FER+'s neutral votes in the training targets (with --ferplus or "
                                          "--aux-ferplus): below 1, a face some annotators called neutral leans "
                                          "towards the emotion the others saw (validation keeps the votes).")
    classes: list[str] | None = setting(None, "Class subset, e.g. happy,sad,neutral,surprise.", kind="classes")
    train_split: str = setting("Training", "Split to train on.")
    val_split: str = setting("PublicTest", "Split to choose the best epoch on.")
    limit: int | None = setting(None, "Use only N random training faces (quick runs).")
    # model
    model: str = setting("seed-cnn", "Registered architecture (see `ferkit models`).")
    model_kwargs: dict = setting({}, "Keyword arguments of the architecture (recipes and config files only).",
                                 cli=False)
    init: str | None = setting(None, "Start from these weights: a .safetensors file or a run folder (its "
                                     "best.safetensors); fresh optimiser and schedule (fine-tune, warm restart).",
                               kind="path")
    teachers: list[str] = setting([], "Distil from this checkpoint of the same architecture and heads, or from a finished "
                                      "ONNX model of any architecture (a shipped name such as fer2013-7, or a .onnx "
                                      "file; its card's TTA): repeat for an ensemble. The teachers' mean "
                                      "probabilities on each training face are blended into the targets.", flag="--teacher", kind="paths")
    distill_weight: float = setting(0.5, "Share of the teachers in each target (with --teacher).")
    teacher_online: bool = setting(False, "The ONNX teachers answer on every training batch as the student sees it "
                                          "(camera faults, augmentation and mixing included; one view) instead of "
                                          "once on the clean faces (function matching).")
    # optimisation (defaults: the tutorials' recipe)
    epochs: int = setting(15, "Epochs.", on_resume="apply")
    batch_size: int = setting(64, "Batch size (under torchrun the global batch, shared out over the processes).")
    optimizer: str = setting("adam", "adam | adamw | sgd.")
    lr: float = setting(5e-4, "Learning rate (peak LR for onecycle).")
    weight_decay: float = setting(0.0, "Weight decay (not applied to biases/BN).")
    momentum: float = setting(0.9, "SGD momentum (Nesterov).")
    grad_clip: float = setting(0.0, "Clip the gradients' global L2 norm to this before each step (0 = off).")
    schedule: str = setting("plateau", "plateau (ReduceLROnPlateau) | cosine | onecycle | none.")
    plateau_patience: int = setting(2, "Plateau: epochs without improvement before the LR drops.")
    plateau_factor: float = setting(0.5, "Plateau: factor the LR drops by.")
    warmup_epochs: float = setting(0.0, "Cosine: linear warm-up epochs.")
    swa_start: int | None = setting(None, "Stochastic weight averaging: average the weights of every epoch from this "
                                          "one on (BatchNorm re-estimated); the average is scored and checkpointed "
                                          "like any epoch. Pair with a constant LR (--schedule none).")
    early_stop: int | None = setting(None, "Stop after N epochs without a better validation accuracy.",
                                     on_resume="apply")
    label_smoothing: float = setting(0.0, "Label smoothing.")
    mixup: float = setting(0.0, "Mixup alpha (0 = off).")
    cutmix: float = setting(0.0, "CutMix alpha (0 = off).")
    mix_prob: float = setting(0.5, "Chance a batch is mixed when mixup/cutmix are on.")
    class_weights: bool = setting(False, "Inverse-frequency class weights in the loss.")
    # augmentation (ImageDataGenerator-style, run on tensors)
    flip: bool = setting(True, "Random horizontal flips.")
    rotation: float = setting(10.0, "Random rotation range, degrees.")
    shift: float = setting(0.1, "Random shift range, fraction of the side.")
    zoom: float = setting(0.1, "Random zoom range, +- fraction.")
    crop_pad: int = setting(0, "Random crop after reflect-padding by N pixels (0 = off).")
    erasing: float = setting(0.0, "Random-erasing probability.")
    corrupt: float = setting(0.0, "Chance a training face gets a camera fault (blur, noise, JPEG, low resolution, "
                                  "tone) before the geometric augmentation (0 = off).")
    # machinery
    precision: str = setting("auto", "auto (bf16 on AMX/AVX512-BF16 CPUs and CUDA) | bf16 | fp32.", on_resume="apply")
    channels_last: bool = setting(True, "Channels-last memory format.", on_resume="apply")
    device: str = setting("auto", "auto | cpu | cuda.", on_resume="apply")
    sync_bn: bool = setting(False, "Under torchrun: SyncBatchNorm, statistics of the global batch.", on_resume="apply")
    seed: int = setting(0, "Random seed.")
    threads: int | None = setting(None, "CPU threads for torch.", on_resume="apply")
    out: str = setting("runs/run", "Run folder: checkpoints, history.csv, curves.png.", flag="--out", short="-o",
                       kind="path")

    def save(self, path: str | Path) -> None:
        atomic_write_json(path, asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """A run's saved config.json; keys this version does not know (e.g. retired settings) are ignored."""
        data = _read_json_object(Path(path))
        names = {f.name for f in fields(cls)}
        return cls.from_dict({k: v for k, v in data.items() if k in names}, source=str(path))

    @classmethod
    def from_dict(cls, values: dict, source: str = "settings") -> TrainConfig:
        """A config from plain data, every value checked against its field's type."""
        hints = field_types()
        for name, value in values.items():
            if name not in hints:
                raise ConfigError(f"{source}: unknown setting {name!r}")
            if not _fits(value, hints[name]):
                raise ConfigError(f"{source}: {name} = {value!r} is not a {_type_name(hints[name])}")
        return cls(**{k: float(v) if hints[k] is float else v for k, v in values.items()})

    def validate(self) -> TrainConfig:
        """Refuse values no run can use, naming the option; called before anything is loaded or written."""
        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"{flag_of(name)} {getattr(self, name)!r}: {why}")

        if self.optimizer not in OPTIMIZERS:
            raise bad("optimizer", f"unknown optimizer {self.optimizer!r}; choose {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise bad("schedule", f"unknown schedule {self.schedule!r}; choose {', '.join(SCHEDULES)}")
        if self.precision not in PRECISIONS:
            raise bad("precision", f"unknown precision; choose {', '.join(PRECISIONS)}")
        if not (self.device in DEVICES or (self.device.startswith("cuda:") and self.device[5:].isdigit())):
            raise bad("device", "unknown device; choose auto, cpu, cuda or cuda:N")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise bad(name, "must be at least 1")
        for name in ("limit", "threads", "swa_start", "early_stop"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise bad(name, "must be at least 1 (leave it out for none)")
        for name in ("plateau_patience", "crop_pad"):
            if getattr(self, name) < 0:
                raise bad(name, "must not be negative")
        for name in ("lr", "weight_decay", "momentum", "grad_clip", "warmup_epochs", "mixup", "cutmix", "rotation",
                     "shift", "zoom", "aux_weight"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise bad(name, "must be a finite number, 0 or more")
        for name in ("mix_prob", "erasing", "corrupt", "plateau_factor", "ferplus_neutral"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise bad(name, "must be between 0 and 1")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise bad("label_smoothing", "must be at least 0 and below 1")
        if self.teachers and not 0.0 < self.distill_weight <= 1.0:
            raise bad("distill_weight", "must be in (0, 1]")
        if self.teacher_online and not self.teachers:
            raise ConfigError("--teacher-online needs at least one --teacher")
        if self.ferplus_neutral != 1.0 and not (self.ferplus or self.aux_ferplus):
            raise bad("ferplus_neutral", "weights FER+ votes: it needs --ferplus or --aux-ferplus")
        if self.aux_ferplus and self.ferplus:
            raise ConfigError("--aux-ferplus adds a FER+ head to a run on FER2013's labels; leave out --ferplus")
        if not self.data:
            raise ConfigError("no data: give DATA (a FER2013 CSV, a folder tree or a folder holding fer2013.csv)")
        return self


# ---------------------------------------------------------------------------- the fields as options
def field_types() -> dict[str, object]:
    return typing.get_type_hints(TrainConfig)


def flag_of(name: str) -> str:
    """The command-line flag of a TrainConfig field: --batch-size for batch_size, --teacher for teachers
    (DATA for the data, the command's argument)."""
    if name == "data":
        return "DATA"
    meta = next(f.metadata for f in fields(TrainConfig) if f.name == name)
    return meta.get("flag") or "--" + name.replace("_", "-")


def default_of(name: str):
    f = next(f for f in fields(TrainConfig) if f.name == name)
    return f.default_factory() if f.default is MISSING else f.default


def _fits(value, hint) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if args and type(None) in args:  # X | None
        return value is None or _fits(value, next(a for a in args if a is not type(None)))
    if origin is list:
        return isinstance(value, list) and all(_fits(v, args[0]) for v in value)
    if hint is dict or origin is dict:
        return isinstance(value, dict)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_name(hint) -> str:
    args = typing.get_args(hint)
    if args and type(None) in args:
        return _type_name(next(a for a in args if a is not type(None))) + " (or null)"
    if typing.get_origin(hint) is list:
        return f"list of {_type_name(typing.get_args(hint)[0])}"
    return {bool: "true/false", int: "whole number", float: "number", str: "string", dict: "table"}.get(hint, str(hint))


# ---------------------------------------------------------------------------- recipes
def load_recipe(path: str | Path) -> dict:
    """A recipe file (`--config`): an object of TrainConfig settings, as JSON or TOML. Every key must be a
    setting (retired ones are skipped, so an old run's config.json still works) and every value its type."""
    path = Path(path)
    if path.suffix.lower() == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            raise ConfigError(f"--config {path}: TOML recipes need Python 3.11 or later; use JSON") from None
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"--config {path}: cannot read it as TOML ({str(exc).splitlines()[0]})") from None
    else:
        data = _read_json_object(path, what=f"--config {path}")
    data = {k: v for k, v in data.items() if k not in RETIRED}
    TrainConfig.from_dict(data, source=f"--config {path}")  # checks names and types
    return data


def _read_json_object(path: Path, what: str | None = None) -> dict:
    what = what or str(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{what}: no such file") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{what}: not a JSON file ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what}: expected an object of settings, found a JSON {type(data).__name__}")
    return data


# ---------------------------------------------------------------------------- resuming
def resume_config(stored: TrainConfig, requested: dict, out: str) -> tuple[TrainConfig, list[str]]:
    """The config a resumed run continues with: the stored one, in folder `out`, with the requested
    settings that a run may change midway applied. A requested setting that differs and may not change
    (it would make another run) is refused, naming every one. Returns (config, notes on what changed)."""
    cfg = TrainConfig(**{**asdict(stored), "out": out})
    meta = {f.name: f.metadata for f in fields(TrainConfig)}
    applied, refused = [], []
    for name, value in requested.items():
        if name == "out" or _same(name, value, getattr(stored, name)):
            continue
        change = f"{flag_of(name)} {_shown(value)} (the run has {_shown(getattr(stored, name))})"
        allowed = meta[name]["on_resume"] == "apply"
        if name == "epochs" and stored.schedule not in PER_EPOCH_SCHEDULES:
            allowed = False
            change += f": its {stored.schedule} schedule is laid out over --epochs"
        if allowed:
            setattr(cfg, name, value)
            applied.append(change)
        else:
            refused.append(change)
    if refused:
        raise ConfigError(f"--resume: {out} was started with other settings: {'; '.join(refused)}. Leave them out "
                          "to continue it, or train into a new -o folder (--init to start from its weights)")
    return cfg, applied


def _same(name: str, a, b) -> bool:
    if a == b:
        return True
    kind = next(f.metadata for f in fields(TrainConfig) if f.name == name).get("kind")
    if kind == "path" and a and b:
        return Path(a).resolve() == Path(b).resolve()
    if kind == "paths" and isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return all(Path(x).resolve() == Path(y).resolve() for x, y in zip(a, b))
    return False


def _shown(value) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value)) or "(none)"
    return "(none)" if value is None else str(value)
