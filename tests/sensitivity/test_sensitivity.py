"""Jacobian norms, finite differences and the per-point loss bounds (float64 references)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from jacspec.sensitivity.norms import (
    finite_difference_sensitivity,
    jacobian_norms,
    loss_bounds,
    mean_jacobian_norm,
    per_point_generalization,
    softmax_jacobian,
)

DT = torch.float64


def _net(seed: int = 0, d: int = 6, k: int = 4) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(),
                         nn.Linear(16, k)).to(DT)


def _autograd_jacobian(net: nn.Module, x: torch.Tensor, softmax: bool) -> torch.Tensor:
    def g(v: torch.Tensor) -> torch.Tensor:
        z = net(v[None])[0]
        return torch.softmax(z, 0) if softmax else z

    return torch.stack([torch.autograd.functional.jacobian(g, xi) for xi in x])


@pytest.mark.parametrize("output", ["softmax", "logits"])
def test_jacobian_norms_match_autograd(output: str) -> None:
    net = _net()
    x = torch.randn(13, 6, dtype=DT)
    ref = _autograd_jacobian(net, x, output == "softmax").flatten(1).norm(dim=1)
    got = jacobian_norms(net, x, output=output, batch_size=5)
    assert got.dtype == DT and got.shape == (13,)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-13)
    assert mean_jacobian_norm(net, x, output=output) == pytest.approx(float(ref.mean()), rel=1e-10)


def test_softmax_jacobian_is_exact_when_saturated() -> None:
    z = torch.tensor([[60.0, 0.0, -3.0]], dtype=DT)
    jf = torch.randn(1, 3, 5, dtype=DT)
    s = torch.softmax(z, 1)[0]
    # closed form for row 0: s_0 * sum_{j != 0} s_j (J_0 - J_j), each term tiny but exact
    row0 = s[0] * sum(s[j] * (jf[0, 0] - jf[0, j]) for j in (1, 2))
    got = softmax_jacobian(jf, z)
    torch.testing.assert_close(got[0, 0], row0, rtol=1e-12, atol=0)
    assert float(got[0, 0].norm()) > 0


def test_finite_differences_agree_with_jacobian_norm() -> None:
    # relative Monte Carlo error <= sqrt(2 / num_samples) = 0.45%; bias O(eps)
    net = _net(1)
    x = torch.randn(4, 6, dtype=DT)
    exact = jacobian_norms(net, x) ** 2
    fd = finite_difference_sensitivity(net, x, eps=1e-8, num_samples=100_000, seed=3)
    assert fd.dtype == DT
    rel = (fd / exact - 1).abs().max()
    assert float(rel) < 0.02
    again = finite_difference_sensitivity(net, x, eps=1e-8, num_samples=100_000, seed=3)
    assert torch.equal(fd, again)
    with pytest.raises(ValueError):
        finite_difference_sensitivity(net, x, eps=0.0)


def _max_entropy_model(n: int, M: float, d: int) -> nn.Module:
    """Linear logits f(x) = sqrt(M) [I | 0] x: orthogonal logit gradients of norm^2 M each."""
    lin = nn.Linear(d, n, bias=False).to(DT)
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[:, :n] = math.sqrt(M) * torch.eye(n, dtype=DT)
    return lin


def test_bounds_are_attained_where_their_assumptions_hold_exactly() -> None:
    n, M, d = 5, 3.0, 8
    net = _max_entropy_model(n, M, d)
    a = torch.tensor([-2.0, -0.3, 0.0, 0.7, 2.5, 6.0], dtype=DT)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    # maximum-entropy points: logit a on class y, 0 on the others
    x_max = torch.zeros(len(a), d, dtype=DT)
    x_max[torch.arange(len(a)), y] = a / math.sqrt(M)
    res = per_point_generalization(net, (x_max, y))
    f = res.frame
    assert res.M == pytest.approx(M, rel=1e-12) and res.num_classes == n
    np.testing.assert_allclose(f["jacobian_norm"], f["eq7"], rtol=1e-10)
    np.testing.assert_allclose(f["target_jacobian_norm"], f["eq5_lower"], rtol=1e-10)
    # all remaining mass on one other class: the eq. 5 upper bound is attained
    x_one = torch.zeros(4, d, dtype=DT)
    x_one[:, 1] = 40.0 / math.sqrt(M)  # class 1 huge, classes 2.. negligible
    x_one[:, 0] = torch.tensor([39.0, 40.0, 41.0, 42.0], dtype=DT) / math.sqrt(M)
    one = per_point_generalization(net, (x_one, torch.zeros(4, dtype=torch.long)), M=M)
    np.testing.assert_allclose(one.frame["target_jacobian_norm"], one.frame["eq5_upper"],
                               rtol=1e-8)


def test_per_point_columns_against_independent_computation() -> None:
    net = _net(2, k=3)
    x = torch.randn(20, 6, dtype=DT)
    y = torch.randint(0, 3, (20,))
    res = per_point_generalization(net, (x, y), batch_size=6)
    f = res.frame
    z = net(x).detach()
    np.testing.assert_allclose(f["loss"], F.cross_entropy(z, y, reduction="none"), rtol=1e-10)
    np.testing.assert_array_equal(f["correct"], (z.argmax(1) == y).numpy())
    js = _autograd_jacobian(net, x, True)
    jl = _autograd_jacobian(net, x, False)
    np.testing.assert_allclose(f["jacobian_norm"], js.flatten(1).norm(dim=1), rtol=1e-10)
    np.testing.assert_allclose(f["target_jacobian_norm"], js[torch.arange(20), y].norm(dim=1),
                               rtol=1e-10)
    m = float(jl.pow(2).sum((1, 2)).mean() / 3)
    assert res.M == pytest.approx(m, rel=1e-10)
    p = np.exp(-f["loss"].to_numpy())
    np.testing.assert_allclose(f["eq6_lower"], math.sqrt(3 * m / 2) * p * (1 - p), rtol=1e-9)
    np.testing.assert_allclose(
        f["eq7"], math.sqrt(m) / 2 * (1 - p) * np.sqrt(9 * p**2 + 1), rtol=1e-9)
    s = res.summary()
    assert s["fraction_in_eq6"] == pytest.approx(
        float(np.mean(f["jacobian_norm"] >= f["eq6_lower"])))
    assert 0 <= s["fraction_in_eq5"] <= s["fraction_in_eq6"] + 1
    with pytest.raises(ValueError):
        per_point_generalization(net, x)  # no labels


def test_loss_bounds_inputs() -> None:
    b = loss_bounds(np.array([0.0, 1e-30, 50.0]), 2.0, 10)
    assert np.all(b["eq5_lower"] <= b["eq5_upper"])
    assert b["eq5_lower"][1] > 0  # 1 - e^-l computed without cancellation
    with pytest.raises(ValueError):
        loss_bounds(np.zeros(2), -1.0, 10)
    with pytest.raises(ValueError):
        loss_bounds(np.zeros(2), 1.0, 1)


def test_eq6_lower_bound_on_a_trained_mlp() -> None:
    """A small ReLU MLP trained to 100% train accuracy on separated Gaussian classes."""
    g = torch.Generator().manual_seed(0)
    k, d = 6, 10
    means = 2.5 * torch.randn(k, d, generator=g)

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, k, (n,), generator=g)
        return means[y] + torch.randn(n, d, generator=g), y

    (xtr, ytr), (xte, yte) = sample(300), sample(300)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(d, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                        nn.Linear(64, k))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(300):
        loss = F.cross_entropy(net(xtr), ytr)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert bool((net(xtr).argmax(1) == ytr).all())
    s = per_point_generalization(net, (xte, yte)).summary()
    assert s["fraction_in_eq6"] >= 0.95, s
    assert 0.0 <= s["fraction_in_eq5"] <= 1.0 and 0.0 <= s["fraction_below_eq7"] <= 1.0
