"""Built-in CNN families: a ResNet-style net and a MobileNetV2-style net.

Both take ``in_channels`` and ``num_classes`` from the data, so one YAML line picks a family.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: bool = True):
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet-style CNN: a 3x3 stem, then stages of basic blocks that double width and halve size.

    Args:
        width: channels of the first stage; stage ``i`` has ``width * 2**i``.
        depth: blocks per stage; its length is the number of stages.
        stem_stride: stride of the 3x3 stem. 2 halves the resolution before the first stage (as
            ImageNet ResNets do), so every stage costs a quarter of the MACs; 1 keeps it.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        width: int = 32,
        depth: Sequence[int] = (2, 2, 2),
        stem_stride: int = 1,
    ):
        super().__init__()
        if stem_stride not in (1, 2):
            raise ValueError(f"stem_stride must be 1 or 2 (got {stem_stride!r})")
        self.stem = _conv_bn(in_channels, width, stride=stem_stride)
        stages, cin = [], width
        for i, n in enumerate(depth):
            cout = width * 2**i
            blocks = [BasicBlock(cin, cout, 1 if i == 0 else 2)]
            blocks += [BasicBlock(cout, cout, 1) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stages(self.stem(x)))
        return self.fc(torch.flatten(x, 1))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn(cin, hidden, k=1))
        layers += [
            _conv_bn(hidden, hidden, k=3, stride=stride, groups=hidden),
            _conv_bn(hidden, cout, k=1, act=False),
        ]
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out


def _scaled(c: float, mult: float, divisor: int = 8) -> int:
    return max(divisor, int(c * mult + divisor / 2) // divisor * divisor)


class MobileNetV2(nn.Module):
    """MobileNetV2-style CNN: depthwise 3x3 convs inside inverted residual blocks.

    Args:
        width_mult: scales every layer's channels (rounded to multiples of 8).
        settings: rows of (expand ratio, channels, repeats, stride); the default suits 32x32 input.
    """

    DEFAULT = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 2), (6, 64, 2, 2), (6, 96, 1, 1))

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        width_mult: float = 1.0,
        settings: Sequence[Sequence[int]] | None = None,
        last_channels: int = 256,
    ):
        super().__init__()
        cin = _scaled(32, width_mult)
        layers: list[nn.Module] = [_conv_bn(in_channels, cin)]
        for t, c, n, s in settings or self.DEFAULT:
            cout = _scaled(c, width_mult)
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        last = _scaled(last_channels, max(1.0, width_mult))
        layers.append(_conv_bn(cin, last, k=1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


FAMILIES = {"resnet": ResNet, "mobilenetv2": MobileNetV2}
