"""Per-example Jacobians against autograd.functional.jacobian and central differences (float64)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from jacspec.jacobian.engine import (
    DEFAULT_METHOD,
    METHODS,
    data_jacobian,
    iter_jacobians,
    jacobians,
    output_map,
)


class ResidualLN(nn.Module):
    """A residual block with LayerNorm and GELU, then a linear head."""

    def __init__(self, d: int, k: int) -> None:
        super().__init__()
        self.inp = nn.Linear(d, 32)
        self.norm = nn.LayerNorm(32)
        self.fc = nn.Linear(32, 32)
        self.head = nn.Linear(32, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x.flatten(1))
        h = h + self.fc(nn.functional.gelu(self.norm(h)))
        return self.head(h)


def small_cnn(c: int, k: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(c, 4, 3, padding=1),
        nn.Tanh(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.Softplus(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.LazyLinear(k),
    )


def bn_eval(d: int, k: int) -> nn.Module:
    net = nn.Sequential(
        nn.Flatten(), nn.Linear(d, 16), nn.BatchNorm1d(16), nn.Tanh(), nn.Linear(16, k)
    )
    net.train()
    with torch.no_grad():
        net(torch.randn(64, d))  # give the running statistics non-trivial values
    return net


CASES = {
    "mlp": ((10,), lambda: nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 4))),
    "cnn_1x28x28": ((1, 28, 28), lambda: small_cnn(1, 3)),
    "cnn_3x24x24": ((3, 24, 24), lambda: small_cnn(3, 5)),
    "residual_ln_gelu": ((1, 28, 28), lambda: ResidualLN(28 * 28, 4)),
    "batchnorm_eval": ((3, 24, 24), lambda: bn_eval(3 * 24 * 24, 3)),
}


def build(name: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    shape, ctor = CASES[name]
    model = ctor()
    x = torch.randn(7, *shape, dtype=torch.float64)
    with torch.no_grad():
        model(torch.randn(2, *shape))  # materialise lazy layers
    return model.double().eval(), x


def reference(model: nn.Module, x: torch.Tensor, output: str) -> torch.Tensor:
    fn = output_map(output)
    rows = [torch.autograd.functional.jacobian(lambda v: fn(model(v[None]))[0], xi) for xi in x]
    return torch.stack(rows)


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_autograd(name: str) -> None:
    model, x = build(name)
    x = x[:5]
    for output in ("softmax", "logits", "log_softmax"):
        ref = reference(model, x, output)
        methods = METHODS if output == "softmax" else (DEFAULT_METHOD,)
        for method in methods:
            got = jacobians(model, x, output=output, batch_size=2, method=method)  # uneven
            assert got.shape == ref.shape == (5, ref.shape[1], *x.shape[1:])
            assert got.dtype == torch.float64
            torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_central_differences(name: str) -> None:
    model, x = build(name)
    x = x[:1]
    got = jacobians(model, x)
    fn = output_map("softmax")
    d = x[0].numel()
    h = 1e-6
    for i in range(x.shape[0]):
        eye = torch.eye(d, dtype=x.dtype).view(d, *x.shape[1:])
        with torch.no_grad():
            fp = fn(model(x[i] + h * eye))
            fm = fn(model(x[i] - h * eye))
        fd = ((fp - fm) / (2 * h)).T.reshape(got.shape[1:])
        rel = (fd - got[i]).norm() / got[i].norm()
        assert rel < 1e-6, f"{name}: relative error {rel:.2e}"


def test_dataloader_and_tuple_inputs_agree() -> None:
    model, x = build("mlp")
    y = torch.arange(7) % 4
    direct = data_jacobian(model, x)
    loader = DataLoader(TensorDataset(x, y), batch_size=2)
    via_loader = data_jacobian(model, loader)
    via_tuple = data_jacobian(model, (x, y), batch_size=5)
    torch.testing.assert_close(direct, via_loader)
    torch.testing.assert_close(direct, via_tuple)
    assert direct.shape == (7, 4 * 10)
    batches = list(iter_jacobians(model, loader))
    assert [b.start for b in batches] == [0, 2, 4, 6]
    assert torch.equal(torch.cat([b.y for b in batches]), y)


def test_float32_default_and_model_untouched() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    x = torch.randn(4, 5)
    j32 = jacobians(model, x)
    assert j32.dtype == torch.float32
    j64 = jacobians(model, x, dtype=torch.float64)
    assert j64.dtype == torch.float64
    assert next(model.parameters()).dtype == torch.float32  # converted copy, not in place
    assert all(p.requires_grad for p in model.parameters())  # restored after the run
    torch.testing.assert_close(j32.double(), j64, rtol=1e-4, atol=1e-6)


def test_softmax_rows_sum_to_zero() -> None:
    model, x = build("cnn_3x24x24")
    jac = jacobians(model, x)
    assert jac.sum(dim=1).abs().max() < 1e-12


class BatchMean(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - x.mean(dim=0, keepdim=True)


def test_refuses_batchnorm_in_train_mode() -> None:
    net = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Linear(8, 3)).train()
    with pytest.raises(ValueError, match="mixes examples.*model.eval"):
        jacobians(net, torch.randn(10, 6))


def test_refuses_batch_mean_layer() -> None:
    net = nn.Sequential(nn.Linear(6, 8), BatchMean(), nn.Linear(8, 3)).eval()
    with pytest.raises(ValueError, match="mixes examples"):
        jacobians(net, torch.randn(10, 6))


def test_dropout_in_train_mode_is_refused_but_eval_is_fine() -> None:
    net = nn.Sequential(nn.Linear(6, 8), nn.Dropout(0.5), nn.Linear(8, 3))
    with pytest.raises(ValueError, match=r"'1' \(Dropout\(p=0.5\).*model\.eval\(\)"):
        jacobians(net.train(), torch.randn(10, 6))
    assert jacobians(net.eval(), torch.randn(10, 6)).shape == (10, 3, 6)


def test_auto_method_choice() -> None:
    from jacspec.jacobian.engine import resolve_method

    mlp_model, _ = build("residual_ln_gelu")
    assert resolve_method(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), "auto") == (
        "batched_grad"
    )
    assert resolve_method(build("cnn_1x28x28")[0], "auto") == "loop"
    assert resolve_method(mlp_model, "auto") == "batched_grad"  # dense leaves only
    assert resolve_method(mlp_model, "replicate") == "replicate"
