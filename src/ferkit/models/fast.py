"""`fer-fast`: a small plain CNN for the fast tier, one view a face, thousands of faces a second on a CPU.

Plain 3x3 conv-BN-ReLU layers (onnxruntime fuses each into one kernel, and a chain without branches keeps
the per-call cost low at batch 1), strided instead of pooled, widths doubling as the side halves:
48 -> 24 -> 12 (twice) -> 6 -> 3, then global average pooling and the classes. About 16 M multiply-adds
and 0.43 M parameters with the default widths and depths; it learns from a big model's probabilities
(`train --teacher fer2013-7`), not from the labels alone. `widths` and `depths` (convs a stage, the first
of each stage after the first strided) size it: recipes pick a larger one where a bench shows it still
runs at the tier's speed.
"""

from __future__ import annotations

from torch import nn

from ferkit.errors import ConfigError
from ferkit.models.registry import register_model


def _conv(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


@register_model("fer-fast")
def fer_fast(num_classes: int = 7, widths: tuple[int, ...] = (16, 32, 64, 128, 256),
             depths: tuple[int, ...] = (1, 1, 2, 1, 1), dropout: float = 0.2) -> nn.Module:
    """widths: the five stages' channels (48, 24, 12, 6 and 3 pixels a side); depths: their convs (at least 1)."""
    for key, value in (("widths", widths), ("depths", depths)):
        if len(value) != 5 or any(int(v) < 1 for v in value):
            raise ConfigError(f"fer-fast: {key} needs 5 entries of at least 1, not {list(value)}")
    layers: list[nn.Module] = []
    cin = 1
    for stage, (width, depth) in enumerate(zip(map(int, widths), map(int, depths))):
        for i in range(depth):
            layers += _conv(cin, width, 2 if stage and i == 0 else 1)
            cin = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(cin, num_classes)]
    return nn.Sequential(*layers)
