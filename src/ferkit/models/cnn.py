"""The FER tutorials' Keras CNNs, rebuilt layer for layer in PyTorch, and our VGG-style net."""

from __future__ import annotations

from torch import nn

from ferkit.models import register_model


def conv_bn(cin: int, cout: int, k: int = 3, bias: bool = True) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, padding=k // 2, bias=bias), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def dense_bn(fin: int, fout: int, dropout: float) -> list[nn.Module]:
    return [nn.Linear(fin, fout), nn.BatchNorm1d(fout), nn.ReLU(inplace=True), nn.Dropout(dropout)]


@register_model("seed-cnn")
def seed_cnn(num_classes: int = 7, dropout: float = 0.25, in_size: int = 48) -> nn.Module:
    """The tutorial's 4-conv + 2-dense CNN: 64 3x3, 128 5x5, 512 3x3, 512 3x3 -> 256 -> 512 -> classes.

    With biases on every conv and dense layer this has exactly 4,474,759 trainable parameters for
    7 classes, the figure Keras prints less its BatchNorm moving statistics.
    """
    layers: list[nn.Module] = []
    cin = 1
    for cout, k in ((64, 3), (128, 5), (512, 3), (512, 3)):
        layers += conv_bn(cin, cout, k) + [nn.MaxPool2d(2), nn.Dropout(dropout)]
        cin = cout
    side = in_size // 16
    layers += [nn.Flatten()] + dense_bn(512 * side * side, 256, dropout) + dense_bn(256, 512, dropout)
    layers += [nn.Linear(512, num_classes)]
    return nn.Sequential(*layers)


@register_model("seed-cnn-small")
def seed_cnn_small(num_classes: int = 7, dropout: float = 0.25, in_size: int = 48) -> nn.Module:
    """The tutorial's small CNN: 4 stages of two 3x3 convs (32, 64, 128, 256) -> 64 -> 64 -> classes."""
    layers: list[nn.Module] = []
    cin = 1
    for cout in (32, 64, 128, 256):
        layers += conv_bn(cin, cout) + conv_bn(cout, cout) + [nn.MaxPool2d(2), nn.Dropout(dropout)]
        cin = cout
    side = in_size // 16
    layers += [nn.Flatten()] + dense_bn(256 * side * side, 64, dropout) + dense_bn(64, 64, dropout)
    layers += [nn.Linear(64, num_classes)]
    return nn.Sequential(*layers)


@register_model("fer-vgg")
def fer_vgg(num_classes: int = 7, widths: tuple[int, ...] = (64, 128, 256, 512), dropout: float = 0.2,
            head_dropout: float = 0.4) -> nn.Module:
    """Our VGG-style net for 48x48: 4 stages of two 3x3 conv-BN-ReLU, max-pool, then global average pool.

    Global pooling instead of the tutorials' flatten keeps it under 5 M parameters and lets it take
    crops of any size (multi-crop testing); the design follows the VGG variants that top FER2013.
    """
    layers: list[nn.Module] = []
    cin = 1
    for i, cout in enumerate(widths):
        layers += conv_bn(cin, cout, bias=False) + conv_bn(cout, cout, bias=False)
        layers += [nn.MaxPool2d(2)] + ([nn.Dropout(dropout)] if i < len(widths) - 1 else [])
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(head_dropout), nn.Linear(cin, num_classes)]
    return nn.Sequential(*layers)
