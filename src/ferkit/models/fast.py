"""`fer-fast`: a small plain CNN for the fast tier, one view a face, thousands of faces a second on a CPU.

Plain 3x3 conv-BN-ReLU layers (onnxruntime fuses each into one kernel, and a chain without branches keeps
the per-call cost low at batch 1), strided instead of pooled, widths doubling as the side halves:
48 -> 24 -> 12 (twice) -> 6 -> 3, then global average pooling and the classes. About 16 M multiply-adds
and 0.43 M parameters with the default widths and depths (the first fast tier's); the shipped tier uses
widths 8-48-96-160-320 and two convs at 6 px (37.5 M, 0.96 M: `configs/fast-n.json`; a thin first conv,
because the float conv at 48 px and the quantising of its output cost time out of proportion to their
multiply-adds in int8). It learns from a big model's probabilities
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


def drop_conv(tensors: dict, depths: tuple[int, ...], stage: int) -> tuple[dict, list[int]]:
    """Weights of a `fer-fast` with the last conv of `stage` removed (that conv must keep its width, so not
    the stage's first), and the new depths: the start of a shorter fine-tune when a trained net is a little
    too slow. Layers after it shift down by one conv-BN-ReLU block; the others keep their weights."""
    depths = [int(d) for d in depths]
    if not 0 <= stage < len(depths) or depths[stage] < 2:
        raise ConfigError(f"fer-fast: stage {stage} has no conv to drop (depths {depths})")
    dropped = sum(depths[:stage + 1]) - 1  # index of the conv block among all convs
    out = {}
    for key, value in tensors.items():
        index, rest = key.split(".", 1)
        block = int(index) // 3
        if block == dropped:
            continue
        out[f"{int(index) - 3 if block > dropped else int(index)}.{rest}"] = value
    depths[stage] -= 1
    return out, depths
