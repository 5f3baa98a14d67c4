"""The optimiser (no weight decay on biases and BatchNorm) and the learning-rate schedule."""

from __future__ import annotations

import math

import torch

from ferkit.errors import ConfigError
from ferkit.train.config import TrainConfig


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
    raise ConfigError(f"--optimizer {cfg.optimizer!r}: unknown optimizer {cfg.optimizer!r}; choose adam, adamw or sgd")


def build_scheduler(cfg: TrainConfig, optimizer, steps_per_epoch: int):
    """Per-step schedulers (cosine, onecycle) or per-epoch ReduceLROnPlateau on val accuracy; None for none."""
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
    raise ConfigError(f"--schedule {cfg.schedule!r}: unknown schedule; choose plateau, cosine, onecycle or none")


def is_per_step(scheduler) -> bool:
    return scheduler is not None and not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
