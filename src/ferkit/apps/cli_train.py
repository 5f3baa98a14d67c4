"""`ferkit train`: the training stack from the command line (torch is imported only when it runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ferkit.apps.errors import user_errors
from ferkit.classes import parse_class_list

O = typer.Option


@user_errors
def train(
    data: Annotated[Path, typer.Argument(help="FER2013 CSV, folder tree, or folder holding fer2013.csv[.gz].")],
    model: Annotated[str, O(help="Registered architecture (see `ferkit models`).")] = "seed-cnn",
    out: Annotated[Path, O("--out", "-o", help="Run folder: checkpoints, history.csv, curves.png.")] = Path("runs/run"),
    ferplus: Annotated[Optional[Path], O(help="FER+ votes file: 8 classes, vote distributions as soft targets.")] = None,
    aux_ferplus: Annotated[Optional[Path], O(help="FER+ votes file for a second head: one net learns FER2013's "
                                                  "7 labels and FER+'s 8-class votes (export each with --head).")] = None,
    aux_weight: Annotated[float, O(help="Weight of the FER+ head's loss (with --aux-ferplus).")] = 1.0,
    init: Annotated[Optional[Path], O(help="Start from these weights: a .safetensors file or a run folder (its "
                                           "best.safetensors); fresh optimiser and schedule (fine-tune, warm restart).")] = None,
    teacher: Annotated[Optional[list[Path]], O(help="Distil from this checkpoint of the same architecture and heads "
                                                   "(repeat for an ensemble): the teachers' mean probabilities on each "
                                                   "training face (and its mirror) are blended into the targets.")] = None,
    distill_weight: Annotated[float, O(help="Share of the teachers in each target (with --teacher).")] = 0.5,
    classes: Annotated[Optional[str], O(help="Class subset, e.g. happy,sad,neutral,surprise.")] = None,
    epochs: Annotated[int, O(help="Epochs.")] = 15,
    batch_size: Annotated[int, O(help="Batch size.")] = 64,
    optimizer: Annotated[str, O(help="adam | adamw | sgd.")] = "adam",
    lr: Annotated[float, O(help="Learning rate (peak LR for onecycle).")] = 5e-4,
    weight_decay: Annotated[float, O(help="Weight decay (not applied to biases/BN).")] = 0.0,
    schedule: Annotated[str, O(help="plateau (ReduceLROnPlateau) | cosine | onecycle | none.")] = "plateau",
    plateau_patience: Annotated[int, O(help="Plateau: epochs without improvement before the LR drops.")] = 2,
    warmup_epochs: Annotated[float, O(help="Cosine: linear warm-up epochs.")] = 0.0,
    swa_start: Annotated[Optional[int], O(help="Stochastic weight averaging: average the weights of every epoch from "
                                               "this one on (BatchNorm re-estimated); the average is scored and "
                                               "checkpointed like any epoch. Pair with a constant LR (--schedule none).")] = None,
    early_stop: Annotated[Optional[int], O(help="Stop after N epochs without a better validation accuracy.")] = None,
    label_smoothing: Annotated[float, O(help="Label smoothing.")] = 0.0,
    mixup: Annotated[float, O(help="Mixup alpha (0 = off).")] = 0.0,
    cutmix: Annotated[float, O(help="CutMix alpha (0 = off).")] = 0.0,
    class_weights: Annotated[bool, O(help="Inverse-frequency class weights in the loss.")] = False,
    flip: Annotated[bool, O(help="Random horizontal flips.")] = True,
    rotation: Annotated[float, O(help="Random rotation range, degrees.")] = 10.0,
    shift: Annotated[float, O(help="Random shift range, fraction of the side.")] = 0.1,
    zoom: Annotated[float, O(help="Random zoom range, +- fraction.")] = 0.1,
    crop_pad: Annotated[int, O(help="Random crop after reflect-padding by N pixels (0 = off).")] = 0,
    erasing: Annotated[float, O(help="Random-erasing probability.")] = 0.0,
    limit: Annotated[Optional[int], O(help="Use only N random training faces (quick runs).")] = None,
    train_split: Annotated[str, O(help="Split to train on.")] = "Training",
    val_split: Annotated[str, O(help="Split to choose the best epoch on.")] = "PublicTest",
    precision: Annotated[str, O(help="auto (bf16 on AMX/AVX512-BF16 CPUs and CUDA) | bf16 | fp32.")] = "auto",
    device: Annotated[str, O(help="auto | cpu | cuda.")] = "auto",
    seed: Annotated[int, O(help="Random seed.")] = 0,
    threads: Annotated[Optional[int], O(help="CPU threads for torch.")] = None,
    resume: Annotated[bool, O(help="Continue the run in --out from its last checkpoint.")] = False,
    config: Annotated[Optional[Path], O(help="Load all settings from a config.json (other options ignored).")] = None,
) -> None:
    """Train a model. Defaults are the FER tutorials' recipe: Adam 5e-4, batch 64, 15 epochs, plateau LR."""
    from ferkit.train.config import TrainConfig
    from ferkit.train.loop import train as run_training

    if config is not None:
        cfg = TrainConfig.load(config)
    else:
        names = parse_class_list(classes)
        cfg = TrainConfig(
            data=str(data), ferplus=str(ferplus) if ferplus else None,
            aux_ferplus=str(aux_ferplus) if aux_ferplus else None, aux_weight=aux_weight, classes=list(names) if names else None,
            model=model, init=str(init) if init else None, teachers=[str(t) for t in teacher or []],
            distill_weight=distill_weight, out=str(out), epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr,
            weight_decay=weight_decay, schedule=schedule, plateau_patience=plateau_patience,
            warmup_epochs=warmup_epochs, swa_start=swa_start, early_stop=early_stop, label_smoothing=label_smoothing, mixup=mixup,
            cutmix=cutmix, class_weights=class_weights, flip=flip, rotation=rotation, shift=shift, zoom=zoom,
            crop_pad=crop_pad, erasing=erasing, limit=limit, train_split=train_split, val_split=val_split,
            precision=precision, device=device, seed=seed, threads=threads,
        )
    if resume and (Path(cfg.out) / "config.json").exists():
        cfg = TrainConfig.load(Path(cfg.out) / "config.json")
    state = run_training(cfg, resume=resume)
    typer.echo(f"best {cfg.val_split} accuracy {state['best_acc']:.4f} at epoch {state['best_epoch']}; "
               f"weights in {Path(cfg.out) / 'best.safetensors'}")


def models() -> None:
    """List the registered architectures with their parameter counts (7 classes)."""
    from ferkit.models import count_parameters, create_model, list_models

    for name in list_models():
        typer.echo(f"{name:16s} {count_parameters(create_model(name, 7)):>12,d} parameters")


def register(app: typer.Typer) -> None:
    app.command()(train)
    app.command()(models)
