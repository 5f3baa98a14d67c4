"""The training loop, top to bottom: data -> model -> optimiser -> epochs -> checkpoints and curves."""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ferkit.data import UNSPLIT, DataError, FaceSet, load_dataset
from ferkit.models import create_model, save_architecture
from ferkit.preprocessing import normalize
from ferkit.train.augment import augment, mix_batch
from ferkit.train.checkpoint import load_init_weights, load_training_state, save_training_state, save_weights
from ferkit.train.config import TrainConfig
from ferkit.train.swa import WeightAverage, bn_sample, recompute_batchnorm

HISTORY_FIELDS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"]
AUX_HEAD = "ferplus"  # the second head of a joint run (--aux-ferplus): FER+'s 8 classes
AUX_BEST = "best-ferplus.safetensors"


# ---------------------------------------------------------------------------- device and precision
def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with AMX or AVX512-BF16. Elsewhere (e.g. AVX2-only AMD EPYC) bf16 autocast is
    emulated and runs ~13x slower than fp32, so 'auto' must not pick it."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def autocast_for(device: torch.device, precision: str):
    """bf16 autocast where it pays (CUDA with bf16, CPUs with AMX), else plain fp32."""
    return (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if uses_bf16(device, precision) else nullcontext


def uses_bf16(device: torch.device, precision: str) -> bool:
    return precision == "bf16" or (
        precision == "auto"
        and (cpu_has_fast_bf16() if device.type == "cpu" else torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    )


# ---------------------------------------------------------------------------- data
def split_data(cfg: TrainConfig) -> tuple[FaceSet, FaceSet]:
    faces = load_dataset(cfg.data, ferplus=cfg.ferplus, classes=tuple(cfg.classes) if cfg.classes else None)
    names = faces.split_names()
    if names == [UNSPLIT]:  # an unsplit folder tree: hold out a fixed 10% for validation
        rng = np.random.default_rng(12345)
        val_mask = rng.random(len(faces)) < 0.1
        train, val = faces.subset(~val_mask), faces.subset(val_mask)
    else:
        train, val = faces.split(cfg.train_split), faces.split(cfg.val_split)
    if cfg.limit:
        keep = np.sort(np.random.default_rng(cfg.seed).permutation(len(train))[: cfg.limit])
        train = train.subset(keep)
    if len(train) == 0 or len(val) == 0:
        raise DataError("training or validation split is empty")
    return train, val


def targets(faces: FaceSet) -> torch.Tensor:
    """Soft targets (N, C): the FER+ vote distribution when present, else one-hot labels."""
    if faces.soft_labels is not None:
        return torch.from_numpy(faces.soft_labels).float()
    return F.one_hot(torch.from_numpy(faces.labels), faces.num_classes).float()


def batch_input(images: np.ndarray, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = torch.from_numpy(normalize(images)).to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


# ---------------------------------------------------------------------------- optimiser and schedule
def build_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}: adam, adamw or sgd")


def build_scheduler(cfg: TrainConfig, optimizer, steps_per_epoch: int):
    """Per-step schedulers (cosine, onecycle) or per-epoch ReduceLROnPlateau on val accuracy."""
    total = cfg.epochs * steps_per_epoch
    warm = int(cfg.warmup_epochs * steps_per_epoch)
    if cfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=cfg.plateau_factor, patience=cfg.plateau_patience, min_lr=1e-6
        )
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total, pct_start=0.25)
    if cfg.schedule == "cosine":
        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    if cfg.schedule == "none":
        return None
    raise ValueError(f"unknown schedule {cfg.schedule!r}: plateau, cosine, onecycle or none")


def joint_loss(logits: torch.Tensor, target: torch.Tensor, sizes: list[int], smoothing: float,
               class_weights: torch.Tensor | None, aux_weight: float) -> torch.Tensor:
    """Soft cross-entropy of the main head, plus `aux_weight` times that of the FER+ head (joint runs).

    Logits and targets are the heads side by side; rows whose FER+ target is all zero (no emotion
    votes) add nothing to the second term.
    """
    main = soft_cross_entropy(logits[:, :sizes[0]], target[:, :sizes[0]], smoothing, class_weights)
    if len(sizes) == 1:
        return main
    aux_logits, aux_target = logits[:, sizes[0]:], target[:, sizes[0]:]
    has = aux_target.sum(1) > 0
    if not bool(has.any()):
        return main
    return main + aux_weight * soft_cross_entropy(aux_logits[has], aux_target[has], smoothing, None)


def head_log_probs(logits: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Log-softmax over each head's own outputs (heads side by side)."""
    return torch.cat([part.float().log_softmax(1) for part in logits.split(sizes, dim=1)], 1)


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor, smoothing: float,
                       class_weights: torch.Tensor | None) -> torch.Tensor:
    if smoothing > 0:
        target = target * (1 - smoothing) + smoothing / target.shape[1]
    loss = -(target * F.log_softmax(logits.float(), dim=1)).sum(1)
    if class_weights is not None:
        loss = loss * (target @ class_weights)
    return loss.mean()


# ---------------------------------------------------------------------------- evaluation
@torch.no_grad()
def predict_logits(model, images: np.ndarray, device, autocast, channels_last: bool, batch: int = 512,
                   tta_flip: bool = False, sizes: list[int] | None = None) -> torch.Tensor:
    """Log-probabilities for uint8 faces (N, 48, 48), per head when `sizes` splits the outputs into
    heads; with tta_flip, the mean probabilities of face and mirror (as log)."""
    model.eval()
    outs = []
    for i in range(0, len(images), batch):
        x = batch_input(images[i:i + batch], device, channels_last)
        with autocast():
            logits = model(x).float()
            split = sizes or [logits.shape[1]]
            p = head_log_probs(logits, split).exp()
            if tta_flip:
                p = (p + head_log_probs(model(torch.flip(x, dims=[3])).float(), split).exp()) / 2
        outs.append(p.log().cpu())
    return torch.cat(outs)


def head_accuracies(logp: torch.Tensor, val_targets: torch.Tensor, aux_labels, num_classes: int):
    """Validation accuracy of the main head and, in a joint run, the FER+ head's majority-vote accuracy."""
    acc = float((logp[:, :num_classes].argmax(1) == val_targets.argmax(1)).float().mean())
    if aux_labels is None:
        return acc, None
    kept = torch.from_numpy(aux_labels >= 0)
    aux_pred = logp[:, num_classes:].argmax(1)
    return acc, float((aux_pred[kept] == torch.from_numpy(aux_labels)[kept]).float().mean())


def score_average(swa: WeightAverage, model, bn_faces: np.ndarray, val_set: FaceSet, val_targets: torch.Tensor,
                  aux_labels, sizes: list[int], cfg: TrainConfig, device, autocast, state: dict, epoch: int,
                  out: Path) -> str:
    """Score the weight average so far on the validation split; it becomes best.safetensors (and the FER+
    head's best) when it beats every checkpoint before it. Returns the note for the epoch line."""
    avg = swa.averaged_model(model)
    bn_gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)  # own RNG: training's stays untouched
    recompute_batchnorm(avg, (augment(batch_input(bn_faces[i:i + 512], device, cfg.channels_last), bn_gen, cfg)
                              for i in range(0, len(bn_faces), 512)), autocast)
    logp = predict_logits(avg, val_set.images, device, autocast, cfg.channels_last, sizes=sizes)
    acc, aux_acc = head_accuracies(logp, val_targets, aux_labels, sizes[0])
    span = {"swa_epochs": [swa.first_epoch, epoch]}
    state["history"][-1]["swa_val_acc"] = round(acc, 5)
    if acc > state["best_acc"]:
        state["best_acc"], state["best_epoch"] = acc, epoch
        save_weights(avg, out / "best.safetensors", epoch=epoch, val_acc=acc, **span)
    note = f" | SWA of epochs {swa.first_epoch}-{epoch}: acc {acc:.4f}"
    if aux_acc is not None:
        state["history"][-1][f"swa_{AUX_HEAD}_val_acc"] = round(aux_acc, 5)
        if aux_acc > state.get("aux_best_acc", -1.0):
            state["aux_best_acc"], state["aux_best_epoch"] = aux_acc, epoch
            save_weights(avg, out / AUX_BEST, epoch=epoch, val_acc=aux_acc, **span)
        note += f", FER+ head {aux_acc:.4f}"
    return note


# ---------------------------------------------------------------------------- records
def write_history(history: list[dict], out: Path) -> None:
    with open(out / "history.csv", "w", newline="") as fh:
        extra = list(dict.fromkeys(k for row in history for k in row if k not in HISTORY_FIELDS))
        w = csv.DictWriter(fh, fieldnames=HISTORY_FIELDS + extra)
        w.writeheader()
        w.writerows(history)
    plot_curves(history, out / "curves.png")


def plot_curves(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot(ep, [h["train_loss"] for h in history], "o-", label="train")
    a.plot(ep, [h["val_loss"] for h in history], "o-", label="validation")
    a.set_title("loss")
    b.plot(ep, [h["train_acc"] for h in history], "o-", label="train")
    b.plot(ep, [h["val_acc"] for h in history], "o-", label="validation")
    for key, label in ((f"{AUX_HEAD}_val_acc", "validation, FER+ head"), ("swa_val_acc", "validation, weight average"),
                       (f"swa_{AUX_HEAD}_val_acc", "validation, weight average, FER+ head")):
        scored = [h for h in history if h.get(key) not in (None, "")]  # the average exists from --swa-start on
        if scored:
            b.plot([h["epoch"] for h in scored], [h[key] for h in scored], "o--" if "swa" in key else "o-", label=label)
    b.set_title("accuracy")
    for ax in (a, b):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def record_session(out: Path, cfg: TrainConfig, device: torch.device, resumed_after: int) -> None:
    """Append this process to out/runinfo.json: command line, machine, precision, library versions.

    Model cards read it (hardware, precision); one entry per start or resume of the run.
    """
    from ferkit.train.export import hardware

    path = out / "runinfo.json"
    try:
        sessions = json.loads(path.read_text()).get("sessions", []) if path.is_file() else []
    except (ValueError, AttributeError):
        sessions = []
    sessions.append({
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": sys.argv, "resumed_after_epoch": resumed_after,
        "hardware": hardware(device), "device": str(device),
        "precision": "bf16" if uses_bf16(device, cfg.precision) else "fp32", "threads": torch.get_num_threads(),
        "torch": torch.__version__, "python": platform.python_version(),
    })
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps({"sessions": sessions}, indent=2) + "\n")
    os.replace(tmp, path)


def early_stopped(cfg: TrainConfig, state: dict) -> bool:
    return bool(cfg.early_stop) and state["epoch"] > 0 and state["epoch"] - state["best_epoch"] >= cfg.early_stop


# ---------------------------------------------------------------------------- the loop
def train(cfg: TrainConfig, resume: bool = False, progress: bool = True, stop_after: int | None = None) -> dict:
    """Train per `cfg`, writing everything into cfg.out; returns the final state dict.

    resume: continue from cfg.out/last.safetensors exactly where it left off.
    stop_after: end the process's work after this many epochs (used to test resuming).
    """
    from ferkit.models import list_models

    if cfg.model not in list_models():  # fail before loading data
        raise ValueError(f"unknown model {cfg.model!r}; registered: {', '.join(list_models())}")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    autocast = autocast_for(device, cfg.precision)

    train_set, val_set = split_data(cfg)
    X, Y = train_set.images, targets(train_set)
    n, num_classes = len(X), train_set.num_classes
    class_weights = None
    if cfg.class_weights:
        freq = Y.sum(0).clamp(min=1)
        class_weights = (freq.sum() / (num_classes * freq)).to(device)
    sizes, heads, aux_val_labels = [num_classes], None, None
    if cfg.aux_ferplus:  # a joint run: a second head learns FER+'s votes for the same faces
        from ferkit.classes import FERPLUS_EMOTIONS
        from ferkit.data.ferplus import ferplus_targets

        if cfg.ferplus:
            raise DataError("--aux-ferplus adds a FER+ head to a run on FER2013's labels; leave out --ferplus")
        aux_soft, aux_labels = ferplus_targets(np.concatenate([train_set.ids, val_set.ids]), cfg.aux_ferplus)
        aux_train, aux_val_labels = aux_soft[:n], aux_labels[n:]
        Y = torch.cat([Y, torch.from_numpy(aux_train)], 1)
        sizes.append(len(FERPLUS_EMOTIONS))
        heads = [{"name": "fer2013", "classes": list(train_set.class_names), "weights": "best.safetensors"},
                 {"name": AUX_HEAD, "classes": list(FERPLUS_EMOTIONS), "weights": AUX_BEST}]
    if cfg.teachers:  # knowledge distillation: blend the teachers' probabilities into the targets
        from ferkit.train.distill import blend_targets, check_weight, teacher_probabilities

        check_weight(cfg.distill_weight)  # before the teachers' pass, not after it

        def fresh_model():
            return create_model(cfg.model, sum(sizes), **cfg.model_kwargs)

        T = teacher_probabilities(cfg.teachers, fresh_model, X, sizes, device, autocast, cfg.channels_last, out)
        Y = blend_targets(Y, T, cfg.distill_weight, sizes)
    Y = Y.to(device)

    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model = create_model(cfg.model, sum(sizes), **cfg.model_kwargs).to(device)
    if cfg.init:
        load_init_weights(model, cfg.init)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    steps = math.ceil(n / cfg.batch_size)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_scheduler(cfg, optimizer, steps)
    per_step = scheduler is not None and not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)

    cfg.save(out / "config.json")
    save_architecture(model, out / "model.json", classes=list(train_set.class_names),
                      **({"heads": heads} if heads else {}))
    state = {"epoch": 0, "best_acc": -1.0, "best_epoch": 0, "history": [], "wall_seconds": 0.0}
    last = out / "last.safetensors"
    for stale in out.glob(".*.safetensors.tmp*"):  # left by a process killed while writing a checkpoint
        stale.unlink(missing_ok=True)
    if resume and last.exists():
        state = load_training_state(last, model, optimizer, scheduler, gen)
        print(f"resumed {out} after epoch {state['epoch']}", file=sys.stderr)
    swa = None
    if cfg.swa_start:
        swa = WeightAverage.resume(last, cfg.swa_start, state["epoch"])
        bn_faces = X[bn_sample(n, cfg.seed)]
    record_session(out, cfg, device, state["epoch"])

    done_here = 0
    while state["epoch"] < cfg.epochs and not early_stopped(cfg, state):
        epoch = state["epoch"] + 1
        t0 = time.time()
        model.train()
        perm = torch.randperm(n, generator=gen)
        tot_loss, tot_correct, seen = 0.0, 0, 0
        bar = tqdm(range(steps), desc=f"epoch {epoch}/{cfg.epochs}", disable=not progress, leave=True,
                   mininterval=0.5 if sys.stderr.isatty() else 30, file=sys.stderr)
        for step in bar:
            idx = perm[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            x = batch_input(X[idx.numpy()], device, cfg.channels_last)
            y = Y[idx.to(device)]
            x = augment(x, gen, cfg)
            x, y_mixed = mix_batch(x, y, gen, cfg.mixup, cfg.cutmix, cfg.mix_prob)
            with autocast():
                logits = model(x)
            loss = joint_loss(logits, y_mixed, sizes, cfg.label_smoothing, class_weights, cfg.aux_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if per_step:
                scheduler.step()
            tot_loss += loss.item() * len(idx)
            tot_correct += int((logits[:, :num_classes].argmax(1) == y[:, :num_classes].argmax(1)).sum())
            seen += len(idx)
            bar.set_postfix(loss=f"{tot_loss / seen:.4f}", acc=f"{tot_correct / seen:.4f}", refresh=False)
        bar.close()

        val_logp = predict_logits(model, val_set.images, device, autocast, cfg.channels_last, sizes=sizes)
        val_logits = val_logp[:, :num_classes]
        val_targets = targets(val_set)
        val_loss = float(soft_cross_entropy(val_logits, val_targets, 0.0, None))
        val_acc, aux_acc = head_accuracies(val_logp, val_targets, aux_val_labels, num_classes)
        if scheduler is not None and not per_step:
            scheduler.step(val_acc)
        seconds = time.time() - t0
        state["wall_seconds"] += seconds
        state["history"].append({
            "epoch": epoch, "train_loss": round(tot_loss / seen, 5), "train_acc": round(tot_correct / seen, 5),
            "val_loss": round(val_loss, 5), "val_acc": round(val_acc, 5),
            "lr": optimizer.param_groups[0]["lr"], "seconds": round(seconds, 1),
        })
        state["epoch"] = epoch
        if val_acc > state["best_acc"]:
            state["best_acc"], state["best_epoch"] = val_acc, epoch
            save_weights(model, out / "best.safetensors", epoch=epoch, val_acc=val_acc)
        aux_note = ""
        if aux_val_labels is not None:  # the FER+ head: majority-vote accuracy, its own best checkpoint
            state["history"][-1][f"{AUX_HEAD}_val_acc"] = round(aux_acc, 5)
            if aux_acc > state.get("aux_best_acc", -1.0):
                state["aux_best_acc"], state["aux_best_epoch"] = aux_acc, epoch
                save_weights(model, out / AUX_BEST, epoch=epoch, val_acc=aux_acc)
            aux_note = f" | FER+ head acc {aux_acc:.4f} (best {state['aux_best_acc']:.4f})"
        if swa is not None and epoch >= swa.first_epoch:
            t_swa = time.time()
            swa.update(model)
            aux_note += score_average(swa, model, bn_faces, val_set, val_targets, aux_val_labels, sizes, cfg,
                                      device, autocast, state, epoch, out)
            extra_seconds = time.time() - t_swa
            seconds += extra_seconds
            state["wall_seconds"] += extra_seconds
            state["history"][-1]["seconds"] = round(seconds, 1)
        save_training_state(last, model, optimizer, scheduler, gen, state,
                            extra=swa.checkpoint_tensors() if swa is not None else None)
        write_history(state["history"], out)
        print(f"epoch {epoch}: train loss {tot_loss / seen:.4f} acc {tot_correct / seen:.4f} | "
              f"{cfg.val_split} loss {val_loss:.4f} acc {val_acc:.4f} | best {state['best_acc']:.4f} "
              f"(epoch {state['best_epoch']}){aux_note} | {seconds:.0f}s", file=sys.stderr, flush=True)
        done_here += 1
        if early_stopped(cfg, state):
            print(f"early stop: no better {cfg.val_split} accuracy for {cfg.early_stop} epochs", file=sys.stderr)
            break
        if stop_after is not None and done_here >= stop_after:
            break
    return state
