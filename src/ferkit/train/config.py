"""Training configuration: one plain dataclass, saved as JSON beside every run."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path


@dataclass
class TrainConfig:
    # data
    data: str = ""  # FER2013 CSV, folder tree, or folder holding fer2013.csv[.gz]
    ferplus: str | None = None  # FER+ votes file: 8 classes, vote distributions as soft targets
    aux_ferplus: str | None = None  # FER+ votes for a second, 8-class head beside FER2013's labels (joint run)
    aux_weight: float = 1.0  # weight of the FER+ head's loss in a joint run
    classes: list[str] | None = None  # class subset, e.g. ["happy", "sad", "neutral", "surprise"]
    train_split: str = "Training"
    val_split: str = "PublicTest"
    limit: int | None = None  # use only the first N training faces (quick runs)
    # model
    model: str = "seed-cnn"
    model_kwargs: dict = field(default_factory=dict)
    init: str | None = None  # start from these weights (a .safetensors file or a run folder); fresh optimiser
    teachers: list[str] = field(default_factory=list)  # distil from these checkpoints' mean probabilities
    distill_weight: float = 0.5  # share of the teachers in each target (with teachers)
    # optimisation (defaults: the tutorials' recipe)
    epochs: int = 15
    batch_size: int = 64
    optimizer: str = "adam"  # adam | adamw | sgd
    lr: float = 5e-4
    weight_decay: float = 0.0
    momentum: float = 0.9
    schedule: str = "plateau"  # plateau | cosine | onecycle | none
    plateau_patience: int = 2
    plateau_factor: float = 0.5
    warmup_epochs: float = 0.0
    swa_start: int | None = None  # average the weights of every epoch from this one on (SWA); None = off
    early_stop: int | None = None  # stop after this many epochs without a better val accuracy
    label_smoothing: float = 0.0
    mixup: float = 0.0  # alpha; 0 disables
    cutmix: float = 0.0  # alpha; 0 disables
    mix_prob: float = 0.5  # chance a batch is mixed when mixup/cutmix are on
    class_weights: bool = False  # inverse-frequency loss weights
    # augmentation (ImageDataGenerator-style, run on tensors)
    flip: bool = True
    rotation: float = 10.0  # degrees
    shift: float = 0.1  # fraction of the side
    zoom: float = 0.1  # +- fraction
    crop_pad: int = 0  # random crop after padding by this many pixels
    erasing: float = 0.0  # random-erasing probability
    # machinery
    precision: str = "auto"  # auto (bf16 where it helps) | bf16 | fp32
    channels_last: bool = True
    device: str = "auto"
    seed: int = 0
    threads: int | None = None
    out: str = "runs/run"
    eval_tta: bool = False  # also score the best checkpoint with flip TTA at the end

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        data = json.loads(Path(path).read_text())
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
