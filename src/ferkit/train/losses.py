"""The training losses: soft cross-entropy, and the sum over the heads of a joint run."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ferkit.train.run import Head, head_sizes


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor, smoothing: float,
                       class_weights: torch.Tensor | None) -> torch.Tensor:
    if smoothing > 0:
        target = target * (1 - smoothing) + smoothing / target.shape[1]
    loss = -(target * F.log_softmax(logits.float(), dim=1)).sum(1)
    if class_weights is not None:
        loss = loss * (target @ class_weights)
    return loss.mean()


def joint_loss(logits: torch.Tensor, target: torch.Tensor, heads: list[Head], smoothing: float,
               class_weights: torch.Tensor | None, aux_weight: float) -> torch.Tensor:
    """Soft cross-entropy of the primary head, plus `aux_weight` times that of each other head (joint runs).

    Logits and targets are the heads side by side; rows whose target for another head is all zero (a face
    without FER+ emotion votes) add nothing to that head's term.
    """
    parts = zip(heads, logits.split(head_sizes(heads), dim=1), target.split(head_sizes(heads), dim=1))
    total = None
    for head, head_logits, head_target in parts:
        if head.primary:
            term = soft_cross_entropy(head_logits, head_target, smoothing, class_weights)
        else:
            has = head_target.sum(1) > 0
            if not bool(has.any()):
                continue
            term = aux_weight * soft_cross_entropy(head_logits[has], head_target[has], smoothing, None)
        total = term if total is None else total + term
    return total


def head_log_probs(logits: torch.Tensor, heads: list[Head] | None = None) -> torch.Tensor:
    """Log-softmax over each head's own outputs (heads side by side; no heads: all outputs are one head)."""
    sizes = head_sizes(heads) if heads else [logits.shape[1]]
    return torch.cat([part.float().log_softmax(1) for part in logits.split(sizes, dim=1)], 1)
