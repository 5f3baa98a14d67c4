"""Where a model came from, for its card: the command and recipe a run was started with, its config, the
sha256 of the data it read, the machine it ran on, and the same for every run whose weights went into it."""

from __future__ import annotations

import hashlib
import os
import platform
import shlex
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

import torch

from ferkit.fileio import sha256
from ferkit.modelcard import ModelCard
from ferkit.train.config import TrainConfig, default_of, flag_of
from ferkit.train.run import RunFolder

RECIPE_KEYS = ("command", "epochs", "best_epoch", "wall_seconds", "init")  # what a card keeps of an earlier run


# ---------------------------------------------------------------------------- the machine
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


def session_entry(device: torch.device, precision: str, resumed_after: int) -> dict:
    """What runinfo.json keeps of one start or resume of a run: command line, machine, precision, versions."""
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": sys.argv, "resumed_after_epoch": resumed_after,
        "hardware": hardware(device), "device": str(device), "precision": precision,
        "threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
    }


# ---------------------------------------------------------------------------- the data
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


# ---------------------------------------------------------------------------- the run
def training_command(cfg: TrainConfig) -> str:
    """A `ferkit train` command line that rebuilds `cfg`, options at their defaults left out (for runs
    started from Python, which have no command line of their own). Settings the command line cannot
    express (model_kwargs) make it `--config <the run's config.json>`."""
    args = ["ferkit", "train", str(cfg.data)]
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if f.name == "data":
            continue
        if not f.metadata["cli"]:
            if value != default_of(f.name):
                return shlex.join(["ferkit", "train", str(cfg.data), "--config", str(RunFolder(cfg.out).config)])
            continue
        if f.name not in ("model", "out") and value == default_of(f.name):
            continue
        flag = flag_of(f.name)
        if f.metadata["kind"] == "paths":  # a repeatable option: --teacher A --teacher B
            args += [a for v in value for a in (flag, str(v))]
        elif isinstance(value, bool):
            args.append(flag if value else "--no-" + flag[2:])
        elif value is None:
            continue
        elif isinstance(value, list):
            args += [flag, ",".join(map(str, value))]
        else:
            args += [flag, repr(value) if isinstance(value, float) else str(value)]
    return shlex.join(args)


def command_record(run: RunFolder, cfg) -> dict:
    """The command a run was started with, as given (the recipe file's settings too); a run started from
    Python has none, so its config stands in as the `ferkit train` command that rebuilds it."""
    record = run.command()
    if record is None:
        return {"command": training_command(cfg)}
    out = {"command": shlex.join(record["argv"]), "argv": record["argv"]}
    if record.get("recipe"):
        out["recipe"] = record["recipe"]
    if record.get("resumed_with"):
        out["resumed_with"] = [{"command": shlex.join(r["argv"]), "changes": r["changes"]}
                               for r in record["resumed_with"]]
    return out


def training_info(run: str | Path | RunFolder, head: str | None = None) -> dict:
    """What a model card says about how the model was made, from the run folder's own records.

    For the FER+ head of a joint run, the best epoch is the one that head was chosen at.
    """
    run = run if isinstance(run, RunFolder) else RunFolder(run)
    info: dict = {}
    cfg = run.load_config()
    if cfg is not None:
        info.update(command_record(run, cfg))
        info["config"] = asdict(cfg)
        info["data_sha256"] = data_files(cfg.data, cfg.ferplus or cfg.aux_ferplus)
        info["train_split"], info["val_split"] = cfg.train_split, cfg.val_split
    state = run.training_state()
    history = state["history"] if state else run.history()
    if history:
        info["epochs"] = len(history)
        key = run.head(head).val_column if head is not None and run.architecture.is_file() else "val_acc"
        best = max(history, key=lambda h: float(h[key]))
        info["best_epoch"], info["best_val_acc"] = int(best["epoch"]), float(best[key])
        if head is not None:
            info["head"] = head
        info["wall_seconds"] = round(float(state["wall_seconds"]) if state else sum(float(h["seconds"]) for h in history), 1)
    if cfg is not None and cfg.init:  # a warm restart: the run it started from is part of the recipe
        before = source_training_info(Path(cfg.init), run)
        if before:
            info["init"] = {k: before[k] for k in RECIPE_KEYS if k in before}
            if "wall_seconds" in info and "wall_seconds" in before:
                earlier = before.get("wall_seconds_with_init", before["wall_seconds"])
                info["wall_seconds_with_init"] = round(info["wall_seconds"] + earlier, 1)
    if cfg is not None and cfg.teachers:  # distilled: the teachers are part of the recipe too
        from ferkit.train.distill import teacher_file

        info["teachers"] = [{**member_record(teacher_file(t), run), "weights": str(t)} for t in cfg.teachers]
        info["distill_weight"] = cfg.distill_weight
    sessions = run.sessions()
    if sessions:
        info["hardware"] = sorted({s["hardware"] for s in sessions})
        info["precision"] = sorted({s.get("precision", "?") for s in sessions})
        info["torch"] = sorted({s.get("torch", "?") for s in sessions})
        info["sessions"] = len(sessions)
    else:
        info["hardware"] = [f"{hardware()} (the exporting machine: the run recorded none)"]
        info["torch"] = [torch.__version__]
    return info


def member_record(source: str | Path, run: RunFolder, head: str | None = None) -> dict:
    """What a card keeps of a run whose weights went into this model (a teacher, a soup member)."""
    made = source_training_info(Path(source), run, head)
    return {"weights": str(source), **{k: made[k] for k in RECIPE_KEYS if k in made}}


def source_training_info(source: Path, run: RunFolder, head: str | None = None) -> dict:
    """How the weights at `source` were made: their run folder's records, or else the model card beside a
    weights file (NAME.json next to NAME.safetensors, as a shipped model has), so a chain of warm
    restarts keeps every stage's command and time."""
    folder = RunFolder(source if source.is_dir() else source.parent)
    if folder.config.is_file() and folder.path.resolve() != run.path.resolve():
        return training_info(folder, head)
    card = source.with_suffix(".json")
    if source.is_file() and card.is_file():
        try:
            return dict(ModelCard.load(card).training or {})
        except (ValueError, TypeError):  # not JSON, or not a model card
            return {}
    return {}
