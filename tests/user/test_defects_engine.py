"""Regression tests of issue 22's engine defects: the batch-independence probe (2), models
that are not an nn.Module (6), torch.inference_mode (7), the memory of jacobians() (8) and
the JacobianOptions fields every Jacobian entry point takes (18)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import jacspec

# ------------------------------------------------------------------ defect 2: mixing probe


class _Base(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.f = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))


class Shift(_Base):
    """out[i] = f(x_i) + 0.1 f(x_{i+1}) (no wrap-around: example 0 moves nobody)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.f(x)
        out = z.clone()
        out[:-1] = z[:-1] + 0.1 * z[1:]
        return out


class Last(_Base):
    """Every output depends on the last example of the batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.f(x)
        return z + z[-1:].expand_as(z)


class MeanRest(_Base):
    """A mean over examples 1..b-1 (example 0 excluded)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.f(x)
        return z + z[1:].mean(0, keepdim=True)


class LaterOnly(_Base):
    """Mixing that appears only at batch positions 9 and beyond."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.f(x)
        out = z.clone()
        out[9:] = z[9:] + z[:-9]
        return out


MIXERS = [Shift, Last, MeanRest, LaterOnly]
ENTRIES = {
    "jacobians": lambda m, x, y: jacspec.jacobians(m, x, dtype=torch.float64),
    "esd": lambda m, x, y: jacspec.esd(m, x, dtype=torch.float64),
    "analyze": lambda m, x, y: jacspec.analyze(m, (x, y), dtype=torch.float64),
}


@pytest.mark.parametrize("entry", list(ENTRIES))
@pytest.mark.parametrize("mixer", MIXERS, ids=lambda c: c.__name__)
def test_models_mixing_through_any_position_are_refused(mixer, entry):
    x, y = torch.randn(20, 6), torch.arange(20) % 3
    with pytest.raises(ValueError, match="mixes examples within a batch"):
        ENTRIES[entry](mixer().eval(), x, y)


class PerExample(_Base):
    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(3)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.bn(self.f(x)))


@pytest.mark.parametrize("kind", ["eager", "scripted"])
def test_eval_batchnorm_and_dropout_still_accepted_and_exact(kind):
    model = PerExample().double().eval()
    run = torch.jit.script(model) if kind == "scripted" else model
    x = torch.randn(20, 6, dtype=torch.float64)
    got = jacspec.jacobians(run, x, output="logits")
    ref = torch.stack([torch.autograd.functional.jacobian(lambda v: model(v[None])[0], xi)
                       for xi in x])
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
