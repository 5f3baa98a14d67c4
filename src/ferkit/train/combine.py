"""Combining trained nets into one model: an ensemble (one graph, mean probabilities of its members) or a
weight soup (one net whose weights are the members' mean)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from torch import nn

from ferkit.errors import RunError, UsageError
from ferkit.train.run import RunFolder


def ensemble_of(parts: list[tuple[nn.Module, dict]]) -> tuple[nn.Module, dict]:
    """One `ensemble` model (mean probabilities) from (model, spec) pairs with the same classes."""
    from ferkit.models import create_model

    classes = list(parts[0][1]["classes"])
    for _, spec in parts[1:]:
        if list(spec["classes"]) != classes:
            raise UsageError(f"ensemble members must share classes: {classes} vs {list(spec['classes'])}")
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
            raise UsageError("soup members must share one architecture and head (their weights differ in shape)")
    model.load_state_dict({k: torch.stack([s[k].float() for s in states]).mean(0).to(v.dtype)
                           if v.is_floating_point() else v for k, v in states[0].items()})
    return model.eval()


def soup_member(source: Path, run: RunFolder, head: str | None) -> nn.Module:
    """A --soup member: a run folder (its best checkpoint for `head`) or a weights file of the same
    architecture as `run` (e.g. a joint net's full weights, cut to `head`)."""
    if source.is_dir():
        return RunFolder(source).load_model(head=head)[0]
    if not source.is_file():
        raise RunError(f"{source}: --soup takes a run folder or a weights file; neither exists")
    try:
        return run.load_model(head=head, weights=source.resolve())[0]
    except (RuntimeError, KeyError, SafetensorError) as exc:  # not safetensors, or other keys or shapes
        raise RunError(f"{source}: not weights of {run.path}'s architecture ({str(exc).splitlines()[0]})") from None
