"""Shared model and data cases for the tests: architectures a user brings, not ones built
for jacspec.

- ``ResNetTiny``: a torchvision-style residual network (one ``nn.ReLU(inplace=True)``
  module called several times per forward, in-place residual add ``out += identity``,
  eval-mode BatchNorm, adaptive pooling).
- ``TransformerTiny``: patches -> ``nn.MultiheadAttention`` (returns a tuple) + LayerNorm
  + GELU MLP block -> mean pool -> linear head.
- ``CNNBNDropout``: conv, BatchNorm2d, Dropout, max pooling, linear head.
- ``MLPFlat``: a plain MLP on flat features ``(n, d)``.

Every builder is seeded; ``dtype`` float64 for references.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class BasicBlock(nn.Module):
    """torchvision's BasicBlock: conv-bn-relu-conv-bn, ``out += identity``, shared ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        out += identity
        out = self.relu(out)
        return out


class ResNetTiny(nn.Module):
    """A two-block torchvision-style ResNet for ``(c, h, w)`` images."""

    def __init__(self, in_channels: int = 1, classes: int = 10, width: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(BasicBlock(width), BasicBlock(width))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer1(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


class TransformerTiny(nn.Module):
    """Rows of an image as tokens: embedding, MHA + LayerNorm, GELU MLP, mean pool, head."""

    def __init__(self, row: int = 8, dim: int = 8, heads: int = 2, classes: int = 10) -> None:
        super().__init__()
        self.embed = nn.Linear(row, dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.norm2 = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x.reshape(x.shape[0], -1, x.shape[-1]))
        a, _ = self.attn(t, t, t, need_weights=False)
        t = self.norm1(t + a)
        t = self.norm2(t + self.mlp(t))
        return self.head(t.mean(dim=1))


class CNNBNDropout(nn.Module):
    """conv -> BatchNorm2d -> ReLU -> Dropout -> max pool -> linear."""

    def __init__(self, in_channels: int = 1, classes: int = 10, side: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.Dropout(0.3),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(4 * (side // 2) ** 2, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x), 1))


class MLPFlat(nn.Module):
    """Linear -> Tanh -> Linear on flat ``(n, d)`` features."""

    def __init__(self, d: int = 64, width: int = 16, classes: int = 10) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, width), nn.Tanh(), nn.Linear(width, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _randomise_bn(model: nn.Module, seed: int) -> None:
    """Give eval-mode BatchNorm layers non-trivial running statistics and affine terms."""
    gen = torch.Generator().manual_seed(seed + 1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))
                m.weight.copy_(1.0 + 0.1 * torch.randn(m.num_features, generator=gen))
                m.bias.copy_(0.1 * torch.randn(m.num_features, generator=gen))


def build(name: str, *, seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Module:
    """One of the shared architectures (eval mode, seeded): resnet, transformer, cnn, mlp."""
    torch.manual_seed(seed)
    model = {
        "resnet": ResNetTiny,
        "transformer": TransformerTiny,
        "cnn": CNNBNDropout,
        "mlp": MLPFlat,
    }[name]()
    _randomise_bn(model, seed)
    return model.to(dtype).eval()


#: Input shape of each shared architecture (per example).
INPUT_SHAPES: dict[str, tuple[int, ...]] = {
    "resnet": (1, 8, 8),
    "transformer": (1, 8, 8),
    "cnn": (1, 8, 8),
    "mlp": (64,),
}


def inputs(name: str, n: int = 6, *, seed: int = 0, dtype=np.float32) -> np.ndarray:
    """Seeded inputs for architecture ``name``: ``(n, *INPUT_SHAPES[name])``."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, *INPUT_SHAPES[name])).astype(dtype)


def labels(n: int = 6, *, seed: int = 0, classes: int = 10) -> np.ndarray:
    """Seeded integer labels ``(n,)``."""
    return np.random.default_rng(seed + 7).integers(0, classes, size=n).astype(np.int64)


def reference_jacobians(model: nn.Module, x: torch.Tensor, output: str = "softmax") -> torch.Tensor:
    """Per-example Jacobians by ``torch.autograd.functional.jacobian`` one example at a time
    (an independent reference): ``(n, k, *input_shape)``."""
    maps = {
        "softmax": lambda z: torch.softmax(z, dim=-1),
        "logits": lambda z: z,
        "log_softmax": lambda z: torch.log_softmax(z, dim=-1),
    }
    g = maps[output]
    rows = []
    for i in range(x.shape[0]):
        xi = x[i : i + 1].detach().clone()
        jac = torch.autograd.functional.jacobian(lambda t: g(model(t))[0], xi)
        rows.append(jac[:, 0])
    return torch.stack(rows)
