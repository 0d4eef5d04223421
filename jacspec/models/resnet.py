"""He et al.'s CIFAR ResNet (2016, section 4.2): depth 6m + 2 (20, 32, 44, 56, 110, ...).

A 3x3 conv of ``width`` channels, then three stages of m basic blocks (two 3x3 conv +
BatchNorm + ReLU, identity shortcut) at ``width``, ``2 width``, ``4 width`` channels, the
first block of stages 2 and 3 at stride 2; global average pooling and a Linear head. Where a
block changes shape the shortcut is option A (subsample by 2, zero-pad the new channels: no
parameters, the paper's CIFAR choice) or option B (1x1 conv + BatchNorm). Built in eval mode
(BatchNorm reads its running statistics, so examples do not mix within a batch);
:func:`jacspec.models.train.train` switches it to training mode while it trains and back after.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from jacspec._util.validation import check_choice

#: Depths the CIFAR family is usually run at (any 6m + 2 with m >= 1 is accepted).
RESNET_DEPTHS = (20, 32, 44, 56, 110)
SHORTCUTS = ("A", "B")


class _PadShortcut(nn.Module):
    """Option A: ``x[:, :, ::2, ::2]`` with ``extra`` zero channels appended."""

    def __init__(self, extra: int, stride: int) -> None:
        super().__init__()
        self.extra, self.stride = extra, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))


class BasicBlock(nn.Module):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``."""

    def __init__(self, c_in: int, c_out: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu2 = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            if shortcut == "A":
                self.shortcut = _PadShortcut(c_out - c_in, stride)
            else:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """stem (conv, BN, ReLU) -> stage1 -> stage2 -> stage3 -> pool -> flatten -> fc."""

    def __init__(self, in_channels: int, num_classes: int, blocks: int, width: int,
                 shortcut: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        stages, c = [], width
        for i, c_out in enumerate((width, 2 * width, 4 * width)):
            layers = []
            for b in range(blocks):
                stride = 2 if (i > 0 and b == 0) else 1
                layers.append(BasicBlock(c, c_out, stride, shortcut))
                c = c_out
            stages.append(nn.Sequential(*layers))
        self.stage1, self.stage2, self.stage3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn(self.conv(x)))
        x = self.stage3(self.stage2(self.stage1(x)))
        return self.fc(self.flatten(self.pool(x)))


def resnet(
    input_shape: Sequence[int] = (3, 32, 32),
    num_classes: int = 10,
    *,
    depth: int = 20,
    width: int = 16,
    shortcut: str = "A",
    seed: int | None = None,
) -> CifarResNet:
    """He et al.'s CIFAR ResNet of ``depth`` = 6m + 2 layers for inputs ``(C, H, W)``, in
    eval mode. Kaiming-normal conv weights (fan out), BatchNorm weight 1 and bias 0, PyTorch's
    default Linear head; drawn under ``seed`` (the global RNG state is left untouched)."""
    shape = tuple(input_shape) if not isinstance(input_shape, int) else (input_shape,)
    if len(shape) != 3 or any(not isinstance(s, int) or s < 1 for s in shape):
        raise ValueError(f"input_shape must be (C, H, W) for resnet, e.g. (3, 32, 32); got "
                         f"{input_shape!r}")
    for name, value in (("num_classes", num_classes), ("width", width)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}")
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 8 or (depth - 2) % 6:
        examples = ", ".join(map(str, RESNET_DEPTHS))
        raise ValueError(f"depth must be 6m + 2 with m >= 1 (e.g. {examples}); got {depth!r}")
    check_choice("shortcut", shortcut, SHORTCUTS)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(int(seed))
        model = CifarResNet(shape[0], num_classes, (depth - 2) // 6, width, shortcut)
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return model.eval()
