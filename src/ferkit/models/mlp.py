"""The fully-connected baseline on flattened pixels: the floor every convnet must beat."""

from __future__ import annotations

from torch import nn

from ferkit.models.registry import register_model


@register_model("mlp")
def mlp(num_classes: int = 7, hidden: tuple[int, ...] = (1024, 512, 256), dropout: float = 0.3,
        in_size: int = 48) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    fin = in_size * in_size
    for h in hidden:
        layers += [nn.Linear(fin, h), nn.BatchNorm1d(h), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        fin = h
    layers += [nn.Linear(fin, num_classes)]
    return nn.Sequential(*layers)
