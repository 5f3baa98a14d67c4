"""An ensemble of registered models that averages their probabilities: one module, one ONNX graph.

The output is the log of the mean probability, so `softmax(output)` is that mean exactly and an
ensemble drops in wherever a single model's logits go (training records, export, the runtime).
Members are plain data ({"name", "kwargs"}) like every other spec, so `model.json` rebuilds it.
"""

from __future__ import annotations

import torch
from torch import nn

from ferkit.errors import UsageError

from ferkit.models.registry import create_model, register_model


class Ensemble(nn.Module):
    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([m(x).float().softmax(dim=1) for m in self.members]).mean(dim=0)
        return probs.clamp_min(1e-30).log()


@register_model("ensemble", composite=True)
def ensemble(num_classes: int = 7, members: tuple[dict, ...] = ()) -> nn.Module:
    """Mean probabilities of `members`, each {"name": registered model, "kwargs": {...}}."""
    if len(members) < 2:
        raise UsageError("an ensemble needs at least two members")
    return Ensemble([create_model(m["name"], num_classes, **m.get("kwargs", {})) for m in members])
