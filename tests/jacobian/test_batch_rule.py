"""The batch-size rule: the Jacobian budget and the forward's saved activations; the float32
precision flags while Jacobians run on an accelerator."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import jacspec
from jacspec.jacobian import engine


def test_saved_bytes_are_what_autograd_keeps() -> None:
    """Linear(5, 7) -> Tanh -> softmax, input gradients only: the Linear saves its weight
    (35 numbers, not its input: no weight gradient), Tanh and softmax their outputs (7 per
    example each); float64, a batch of 4."""
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh()).double().requires_grad_(False)
    x = torch.randn(4, 5, dtype=torch.float64)
    got = engine.saved_bytes_per_example(model, engine.output_map("softmax"), x)
    assert got == (35 + 4 * (7 + 7)) * 8 // 4


def test_saved_activations_cap_the_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    assert engine.batch_size_for(10, 4, budget=10**9) == engine.MAX_BATCH
    assert engine.batch_size_for(10, 4, budget=10**9, saved=engine.ACTIVATION_BYTES // 50) == 50
    model = jacspec.resnet((3, 8, 8), 10, depth=8, width=4, seed=0)
    x = torch.randn(60, 3, 8, 8)
    per = engine.saved_bytes_per_example(model.requires_grad_(False),
                                         engine.output_map("softmax"), x[:8])
    model.requires_grad_(True)
    monkeypatch.setattr(engine, "ACTIVATION_BYTES", 16 * per)  # room for 16 examples
    sizes = [b.jac.shape[0] for b in jacspec.iter_jacobians(model, x)]
    assert sizes == [16, 16, 16, 12]
    assert all(p.requires_grad for p in model.parameters())  # the user's model untouched


def test_full_precision_on_an_accelerator_restores_the_flags() -> None:
    conv = torch.backends.cudnn.conv
    before = conv.fp32_precision
    with engine.full_precision("meta"):
        assert conv.fp32_precision == "ieee"
        assert torch.backends.cuda.matmul.fp32_precision == "ieee"
    assert conv.fp32_precision == before
    with engine.full_precision("cpu"):
        assert conv.fp32_precision == before
