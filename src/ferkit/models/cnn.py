"""The FER tutorials' Keras CNNs, rebuilt layer for layer in PyTorch, and our VGG-style net."""

from __future__ import annotations

from torch import nn

from ferkit.models.registry import register_model


def conv_bn(cin: int, cout: int, k: int = 3, bias: bool = True) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, padding=k // 2, bias=bias), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def dense_bn(fin: int, fout: int, dropout: float) -> list[nn.Module]:
    return [nn.Linear(fin, fout), nn.BatchNorm1d(fout), nn.ReLU(inplace=True), nn.Dropout(dropout)]


def tutorial_cnn(stages: list[list[tuple[int, int]]], dense: tuple[int, ...], num_classes: int,
                 dropout: float, in_size: int) -> nn.Module:
    """The Keras tutorials' layout: conv stages (conv-BN-ReLU per (width, kernel), then max-pool and
    dropout) -> flatten -> dense-BN-ReLU-dropout per width -> classes."""
    layers: list[nn.Module] = []
    cin = 1
    for stage in stages:
        for cout, k in stage:
            layers += conv_bn(cin, cout, k)
            cin = cout
        layers += [nn.MaxPool2d(2), nn.Dropout(dropout)]
    fin = cin * (in_size // 2 ** len(stages)) ** 2
    layers.append(nn.Flatten())
    for width in dense:
        layers += dense_bn(fin, width, dropout)
        fin = width
    layers.append(nn.Linear(fin, num_classes))
    return nn.Sequential(*layers)


@register_model("seed-cnn")
def seed_cnn(num_classes: int = 7, dropout: float = 0.25, in_size: int = 48) -> nn.Module:
    """The tutorial's 4-conv + 2-dense CNN: 64 3x3, 128 5x5, 512 3x3, 512 3x3 -> 256 -> 512 -> classes.

    With biases on every conv and dense layer this has exactly 4,474,759 trainable parameters for
    7 classes, the figure Keras prints less its BatchNorm moving statistics.
    """
    stages = [[(64, 3)], [(128, 5)], [(512, 3)], [(512, 3)]]
    return tutorial_cnn(stages, (256, 512), num_classes, dropout, in_size)


@register_model("seed-cnn-small")
def seed_cnn_small(num_classes: int = 7, dropout: float = 0.25, in_size: int = 48) -> nn.Module:
    """The tutorial's small CNN: 4 stages of two 3x3 convs (32, 64, 128, 256) -> 64 -> 64 -> classes."""
    stages = [[(width, 3), (width, 3)] for width in (32, 64, 128, 256)]
    return tutorial_cnn(stages, (64, 64), num_classes, dropout, in_size)


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
