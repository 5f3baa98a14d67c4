"""A training run folder and the heads of its model: every file name a run writes, in one place.

    RUN/config.json            the TrainConfig it trains with
    RUN/model.json             the architecture (name, num_classes, kwargs), classes, heads of a joint run
    RUN/best.safetensors       the weights of the best epoch (of the first head)
    RUN/best-ferplus.safetensors   the FER+ head's best epoch (joint runs)
    RUN/last.safetensors       the training checkpoint a resume continues from
    RUN/history.csv, curves.png    one row per epoch, and its picture
    RUN/runinfo.json           one entry per start or resume: machine, precision, library versions, argv
    RUN/command.json           the command line that started it (and its recipe file), for the model card
    RUN/teacher-probs.safetensors  cached teacher probabilities (distillation)
    RUN/eval/...               reports written by `ferkit export`

Reading records needs no torch; loading a model imports it.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from ferkit.classes import FERPLUS_EMOTIONS
from ferkit.errors import RunError
from ferkit.fileio import atomic_write_json, atomic_write_text, ensure_dir
from ferkit.train.config import TrainConfig

BEST = "best.safetensors"
HISTORY_FIELDS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"]


# ---------------------------------------------------------------------------- heads
@dataclass(frozen=True)
class Head:
    """One classifier head of a run's net: its outputs are `size` columns of the net's, after the heads before it.

    The primary head (the first) picks best.safetensors and the run's best epoch; another head keeps its own
    best checkpoint and history column (the FER+ head of a joint run: best-ferplus.safetensors, ferplus_val_acc).
    """

    name: str
    classes: tuple[str, ...]
    best: str = BEST  # its best checkpoint, a file in the run folder
    primary: bool = True
    title: str = ""  # how progress lines and curves name it (default: its name)

    @property
    def size(self) -> int:
        return len(self.classes)

    @property
    def val_column(self) -> str:
        """Its validation accuracy's column in history.csv (the weight average's has `swa_` in front)."""
        return "val_acc" if self.primary else f"{self.name}_val_acc"

    @property
    def state_prefix(self) -> str:
        """Its best accuracy and epoch in a training checkpoint's state: best_acc, or aux_best_acc."""
        return "" if self.primary else "aux_"

    @property
    def label(self) -> str:
        return self.title or self.name

    def as_dict(self) -> dict:
        return {"name": self.name, "classes": list(self.classes), "weights": self.best}


FERPLUS_HEAD = Head("ferplus", FERPLUS_EMOTIONS, "best-ferplus.safetensors", primary=False, title="FER+")


def plain_heads(classes) -> list[Head]:
    """The one head of a plain run."""
    return [Head("main", tuple(classes))]


def joint_heads(classes) -> list[Head]:
    """A joint run (--aux-ferplus): the data's labels first, FER+'s 8-class votes second."""
    return [Head("fer2013", tuple(classes)), FERPLUS_HEAD]


def head_sizes(heads: list[Head]) -> list[int]:
    return [h.size for h in heads]


# ---------------------------------------------------------------------------- the folder
class RunFolder:
    CONFIG = "config.json"
    ARCHITECTURE = "model.json"
    LAST = "last.safetensors"
    HISTORY = "history.csv"
    CURVES = "curves.png"
    SESSIONS = "runinfo.json"
    COMMAND = "command.json"
    TEACHER_CACHE = "teacher-probs.safetensors"
    EVAL = "eval"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    config = property(lambda self: self.path / self.CONFIG)
    architecture = property(lambda self: self.path / self.ARCHITECTURE)
    best = property(lambda self: self.path / BEST)
    last = property(lambda self: self.path / self.LAST)
    history_file = property(lambda self: self.path / self.HISTORY)
    curves = property(lambda self: self.path / self.CURVES)
    sessions_file = property(lambda self: self.path / self.SESSIONS)
    command_file = property(lambda self: self.path / self.COMMAND)
    teacher_cache = property(lambda self: self.path / self.TEACHER_CACHE)

    def export_reports(self, name: str, split: str) -> Path:
        """Where `ferkit export` puts the evaluation reports of model NAME on a split."""
        return self.path / self.EVAL / name / split

    def eval_reports(self, *parts: str | None) -> Path:
        """Where `ferkit evaluate RUN` puts its reports by default: RUN/eval-[HEAD-]SPLIT-TTA."""
        return self.path / "-".join(filter(None, [self.EVAL, *parts]))

    # ------------------------------------------------------------------ is it a run?
    def is_run(self, weights: bool = True) -> bool:
        return self.architecture.is_file() and (not weights or self.best.is_file())

    def require(self, weights: bool = True) -> RunFolder:
        """The one check that a folder is a training run (model.json, and best.safetensors unless only the
        architecture is needed); RunError naming the folder and what it lacks otherwise."""
        if not self.is_run(weights):
            expected = f"{self.ARCHITECTURE} and {BEST}" if weights else self.ARCHITECTURE
            raise RunError(f"{self.path}: not a training run folder ({expected} expected)")
        return self

    def create(self) -> RunFolder:
        ensure_dir(self.path)
        return self

    def clean_stale(self) -> None:
        """Remove the temporary files a process killed while writing a checkpoint left behind."""
        for stale in self.path.glob(".*.safetensors.tmp*"):
            stale.unlink(missing_ok=True)

    # ------------------------------------------------------------------ records
    def load_config(self) -> TrainConfig | None:
        """The run's TrainConfig, or None when it has no config.json."""
        return TrainConfig.load(self.config) if self.config.is_file() else None

    def spec(self) -> dict:
        """model.json: the architecture, its classes and (joint runs) its heads."""
        try:
            return json.loads(self.architecture.read_text())
        except FileNotFoundError:
            raise RunError(f"{self.path}: not a training run folder ({self.ARCHITECTURE} expected)") from None
        except ValueError as exc:
            raise RunError(f"{self.architecture}: not JSON ({exc})") from None

    def heads(self, spec: dict | None = None) -> list[Head]:
        spec = spec if spec is not None else self.spec()
        if not spec.get("heads"):
            return plain_heads(spec.get("classes") or ())
        return [FERPLUS_HEAD if h["name"] == FERPLUS_HEAD.name and i else Head(h["name"], tuple(h["classes"]), h["weights"],
                                                                              primary=i == 0)
                for i, h in enumerate(spec["heads"])]

    def head(self, name: str | None = None, spec: dict | None = None) -> Head:
        """The head called `name` (default: the first); RunError listing the run's heads otherwise."""
        heads = self.heads(spec)
        if name is None:
            return heads[0]
        for h in heads:
            if h.name == name:
                return h
        raise RunError(f"head {name!r}: {self.path} has {', '.join(h.name for h in heads)}")

    def history(self) -> list[dict]:
        """history.csv as rows of strings ([] when there is none)."""
        if not self.history_file.is_file():
            return []
        with open(self.history_file, newline="") as fh:
            return list(csv.DictReader(fh))

    def write_history(self, rows: list[dict]) -> None:
        import io

        extra = list(dict.fromkeys(k for row in rows for k in row if k not in HISTORY_FIELDS))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS + extra, lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.history_file, buf.getvalue())

    def sessions(self) -> list[dict]:
        """One entry per start or resume of the run ([] when none was recorded)."""
        try:
            return list(json.loads(self.sessions_file.read_text()).get("sessions", []))
        except (OSError, ValueError, AttributeError):
            return []

    def add_session(self, entry: dict) -> None:
        atomic_write_json(self.sessions_file, {"sessions": [*self.sessions(), entry]})

    def command(self) -> dict | None:
        """How the run was started: {"argv": [...], "recipe": {"file", "settings"} or None, "resumed_with": [...]}."""
        try:
            data = json.loads(self.command_file.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and isinstance(data.get("argv"), list) else None

    def record_command(self, argv: list[str] | None, recipe: dict | None = None, changes: list[str] | None = None,
                       fresh: bool = True) -> None:
        """At a fresh start, the command line as given (no command line: none on record); at a resume that
        changed settings, that command line and the changes, appended."""
        if fresh:
            if argv is None:
                self.command_file.unlink(missing_ok=True)
            else:
                atomic_write_json(self.command_file, {"argv": list(argv), "recipe": recipe, "resumed_with": []})
            return
        record = self.command()
        if record is not None and argv is not None and changes:
            record.setdefault("resumed_with", []).append({"argv": list(argv), "changes": list(changes)})
            atomic_write_json(self.command_file, record)

    def training_state(self) -> dict | None:
        """The state dict (epoch, history, best, wall time) stored in last.safetensors, or None."""
        if not self.last.is_file():
            return None
        from ferkit.train.checkpoint import read_metadata

        return read_metadata(self.last).get("state")

    # ------------------------------------------------------------------ the model
    def load_model(self, head: str | None = None, weights: str | Path | None = None):
        """Rebuild the run's net from model.json and load a head's weights; returns (model in eval mode, spec).

        `head` (default: the first) picks one head of a joint run: the result is a plain single-head net of
        the same architecture, loaded from that head's best checkpoint (or `weights`, a file), and the spec
        lists that head's classes.
        """
        from ferkit.models import load_architecture
        from ferkit.train.checkpoint import load_weights

        self.require(weights=weights is None)
        model, spec = load_architecture(self.architecture)
        chosen = self.head(head, spec)
        load_weights(model, self.path / (weights or chosen.best))
        if not spec.get("heads"):
            return model.eval(), spec
        heads = self.heads(spec)
        start = sum(h.size for h in heads[:heads.index(chosen)])
        single = single_head(model, spec, start, chosen.size)
        return single.eval(), {**spec, "num_classes": chosen.size, "classes": list(chosen.classes),
                               "head": chosen.name, "heads": None}


def single_head(model, spec: dict, start: int, size: int):
    """The same architecture with `size` outputs, its last linear layer cut to outputs start..start+size."""
    from torch import nn

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


def weights_file(source: str | Path) -> Path:
    """The weights file an --init/--teacher/--soup source names: the file itself, or a run folder's best."""
    path = Path(source)
    return path / BEST if path.is_dir() else path
