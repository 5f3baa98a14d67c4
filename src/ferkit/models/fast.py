"""`fer-fast`: a small plain CNN for the fast tier, one view a face, thousands of faces a second on a CPU.

Plain 3x3 conv-BN-ReLU layers (onnxruntime fuses each into one kernel, and a chain without branches keeps
the per-call cost low at batch 1), strided instead of pooled, widths doubling as the side halves:
48 -> 24 -> 12 (twice) -> 6 -> 3, then global average pooling and the classes. About 16 M multiply-adds
and 0.43 M parameters with the default widths; it learns from a big model's multi-view probabilities
(`train --teacher fer2013-7`), not from the labels alone.
"""

from __future__ import annotations

from torch import nn

from ferkit.errors import ConfigError
from ferkit.models.registry import register_model


def _conv(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


@register_model("fer-fast")
def fer_fast(num_classes: int = 7, widths: tuple[int, ...] = (16, 32, 64, 128, 256), dropout: float = 0.2) -> nn.Module:
    """widths: the five stages' channels (48, 24, 12, 6 and 3 pixels a side); the 12-pixel stage has two convs."""
    if len(widths) != 5:
        raise ConfigError(f"fer-fast: widths needs 5 entries, not {len(widths)}")
    w = [int(x) for x in widths]
    layers = _conv(1, w[0]) + _conv(w[0], w[1], 2) + _conv(w[1], w[2], 2) + _conv(w[2], w[2])
    layers += _conv(w[2], w[3], 2) + _conv(w[3], w[4], 2)
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(w[4], num_classes)]
    return nn.Sequential(*layers)
