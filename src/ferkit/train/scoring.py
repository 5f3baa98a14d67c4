"""Scoring during training: per-head probabilities of the validation faces, each head's accuracy, its best
checkpoint, and the weight average (SWA) scored like an epoch."""

from __future__ import annotations

import numpy as np
import torch

from ferkit.train.augment import augment
from ferkit.train.checkpoint import save_weights
from ferkit.train.losses import head_log_probs
from ferkit.train.run import Head, RunFolder
from ferkit.train.swa import WeightAverage, recompute_batchnorm


def batch_input(images: np.ndarray, device: torch.device, channels_last: bool) -> torch.Tensor:
    from ferkit.preprocessing import normalize

    x = torch.from_numpy(normalize(images)).to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@torch.no_grad()
def predict_logits(model, images: np.ndarray, device, autocast, channels_last: bool, batch: int = 512,
                   tta_flip: bool = False, heads: list[Head] | None = None) -> torch.Tensor:
    """Log-probabilities for uint8 faces (N, 48, 48), per head when `heads` split the outputs; with
    tta_flip, the mean probabilities of face and mirror (as log)."""
    model.eval()
    outs = []
    for i in range(0, len(images), batch):
        x = batch_input(images[i:i + batch], device, channels_last)
        with autocast():
            p = head_log_probs(model(x).float(), heads).exp()
            if tta_flip:
                p = (p + head_log_probs(model(torch.flip(x, dims=[3])).float(), heads).exp()) / 2
        outs.append(p.log().cpu())
    return torch.cat(outs)


def head_accuracies(logp: torch.Tensor, heads: list[Head], val_targets: torch.Tensor,
                    aux_labels: np.ndarray | None) -> list[float]:
    """Validation accuracy of each head: the primary head against the data's targets, another head (FER+)
    against its majority-vote labels (-1 where a face has none: left out)."""
    accs, start = [], 0
    for head in heads:
        pred = logp[:, start:start + head.size].argmax(1)
        start += head.size
        if head.primary:
            accs.append(float((pred == val_targets.argmax(1)).float().mean()))
        else:
            kept = torch.from_numpy(aux_labels >= 0)
            accs.append(float((pred[kept] == torch.from_numpy(aux_labels)[kept]).float().mean()))
    return accs


def keep_if_best(head: Head, acc: float, epoch: int, state: dict, model, run: RunFolder, **meta) -> bool:
    """Checkpoint `model` as the head's best when `acc` beats every epoch before; the state keeps the record."""
    key = head.state_prefix
    if acc <= state.get(f"{key}best_acc", -1.0):
        return False
    state[f"{key}best_acc"], state[f"{key}best_epoch"] = acc, epoch
    save_weights(model, run / head.best, epoch=epoch, val_acc=acc, **meta)
    return True


def score_average(swa: WeightAverage, model, bn_faces: np.ndarray, val_images: np.ndarray, val_targets: torch.Tensor,
                  aux_labels, heads: list[Head], cfg, device, autocast, state: dict, epoch: int,
                  run: RunFolder) -> str:
    """Score the weight average so far on the validation split; it becomes each head's best checkpoint when
    it beats every one before it. Returns the note for the epoch line."""
    avg = swa.averaged_model(model)
    bn_gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)  # own RNG: training's stays untouched
    recompute_batchnorm(avg, (augment(batch_input(bn_faces[i:i + 512], device, cfg.channels_last), bn_gen, cfg)
                              for i in range(0, len(bn_faces), 512)), autocast)
    logp = predict_logits(avg, val_images, device, autocast, cfg.channels_last, heads=heads)
    span = {"swa_epochs": [swa.first_epoch, epoch]}
    notes = []
    for head, acc in zip(heads, head_accuracies(logp, heads, val_targets, aux_labels)):
        state["history"][-1][f"swa_{head.val_column}"] = round(acc, 5)
        keep_if_best(head, acc, epoch, state, avg, run, **span)
        notes.append(f"acc {acc:.4f}" if head.primary else f"{head.label} head {acc:.4f}")
    return f" | SWA of epochs {swa.first_epoch}-{epoch}: {', '.join(notes)}"
