"""A pre-activation-free ResNet for 48x48 faces: a 3x3 stem at full resolution, 4 stages of basic blocks.

Residual connections let it train fast with a one-cycle schedule; global pooling makes it
crop-size agnostic, like `fer-vgg`.
"""

from __future__ import annotations

import torch
from torch import nn

from ferkit.models.registry import register_model


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class FerResNet(nn.Module):
    def __init__(self, num_classes: int, widths: tuple[int, ...], blocks: tuple[int, ...], dropout: float) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU(inplace=True))
        stages, cin = [], widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            for j in range(n):
                stages.append(BasicBlock(cin, w, 2 if (j == 0 and i > 0) else 1))
                cin = w
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(cin, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


@register_model("fer-resnet")
def fer_resnet(num_classes: int = 7, widths: tuple[int, ...] = (64, 128, 256, 512),
               blocks: tuple[int, ...] = (2, 2, 2, 2), dropout: float = 0.3) -> nn.Module:
    """ResNet-18 layout adapted to 48x48 (no 7x7 stem, no early pooling): 11 M parameters."""
    return FerResNet(num_classes, tuple(widths), tuple(blocks), dropout)


@register_model("fer-resnet-s")
def fer_resnet_s(num_classes: int = 7, dropout: float = 0.3) -> nn.Module:
    """Half-width ResNet (32..256): ~2.8 M parameters, ~4x cheaper, for CPU training budgets."""
    return FerResNet(num_classes, (32, 64, 128, 256), (2, 2, 2, 2), dropout)
