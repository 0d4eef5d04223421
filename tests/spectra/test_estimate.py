"""estimate_esd: the exact/SLQ decision and SLQ results against the exact ESD (float64)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from jacspec.spectra.estimate import estimate_esd
from jacspec.spectra.plan import plan_esd
from jacspec.spectra.slq import cdf_distance

K, D = 4, 12


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(D, 24), nn.Tanh(), nn.Linear(24, K)).double().eval()


def _x(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _reference_eigs(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """Brute force: per-example softmax Jacobians by autograd, then eigvalsh of 𝒥𝒥^T/n."""
    rows = [
        torch.autograd.functional.jacobian(lambda z: torch.softmax(model(z[None]), 1)[0], xi)
        .reshape(-1)
        .detach()
        for xi in x
    ]
    J = torch.stack(rows).numpy()
    small = J.T @ J if J.shape[1] <= J.shape[0] else J @ J.T
    return np.sort(np.clip(np.linalg.eigvalsh(small / J.shape[0]), 0, None))[::-1]


def test_plan_exact_small_slq_large() -> None:
    p = plan_esd(100, 48)
    assert (p.method, p.side, p.dim) == ("exact", "dual", 48)
    big = plan_esd(50_000, 30_720, max_memory=8 * 2**30)
    assert big.method == "slq" and big.side == "dual" and big.dim == 30_720
    assert "max_exact_dim" in big.reason
    assert big.storage == "file"  # 5.7 GiB of float32 rows > half of 8 GiB
    assert plan_esd(50_000, 30_720, max_memory=64 * 2**30).storage == "memory"
    tight = plan_esd(3000, 2000, max_memory=2**20)  # dim small but memory tiny
    assert tight.method == "slq" and "exact needs" in tight.reason
    assert plan_esd(30, 48).side == "primal"
    assert plan_esd(100, 48, method="slq", storage="stream").storage == "stream"
    json.dumps(p.to_dict())
    with pytest.raises(ValueError, match="method"):
        plan_esd(10, 10, method="fast")
    with pytest.raises(ValueError, match="storage"):
        plan_esd(10, 10, storage="cloud")


def test_exact_and_slq_agree_with_brute_force_dual() -> None:
    model, x = _model(), _x(150)
    ref = _reference_eigs(model, x)  # dual side: kd = 48 < n = 150
    ex = estimate_esd(model, x, method="exact", dtype=torch.float64)
    assert ex.method == "exact" and ex.side == "dual" and ex.dim == K * D
    np.testing.assert_allclose(ex.nodes, ref, rtol=1e-8, atol=1e-14)
    es = estimate_esd(model, x, method="slq", dtype=torch.float64, num_steps=40,
                      num_vectors=12, top_k=5, seed=3)
    assert es.method == "slq" and es.storage == "memory" and es.side == "dual"
    np.testing.assert_allclose(es.trace, ref.sum(), rtol=1e-10)  # exact ||𝒥||_F^2 / n
    np.testing.assert_allclose(es.top_eigenvalues, ref[:5], rtol=1e-8)
    assert es.lambda_max == pytest.approx(ref[0], rel=1e-8)
    assert abs(es.trace_estimate - ref.sum()) < 4 * es.trace_stderr
    # softmax deflation: exact atom 1/k at 0 on the dual side
    assert es.zero_mass == pytest.approx(1 / K, abs=1e-12)
    assert ex.zero_mass >= 1 / K - 1e-12
    # Lanczos exhausts the 36-dim range: only start-vector sampling noise remains
    assert cdf_distance(ref, es.nodes, None, es.weights, zero_tol=1e-8) < 0.15
    assert es.params["num_vectors"] == 12 and es.params["null_dim"] == D
    json.dumps(es.to_dict())
    json.dumps(ex.summary())
    assert es.to_frame().shape == (es.grid.size, 2)
    assert np.isclose(es.grid_density.sum() * (es.grid[1] - es.grid[0]), 1.0, atol=1e-2)


def test_primal_side_and_storages_agree(tmp_path) -> None:
    model, x = _model(2), _x(30, 4)  # n = 30 < kd = 48: primal
    ref = _reference_eigs(model, x)
    kw = dict(method="slq", dtype=torch.float64, num_steps=20, num_vectors=4, top_k=3, seed=0)
    mem = estimate_esd(model, x, storage="memory", **kw)
    assert mem.side == "primal" and mem.dim == 30
    np.testing.assert_allclose(mem.top_eigenvalues, ref[:3], rtol=1e-8)
    np.testing.assert_allclose(mem.trace, ref.sum(), rtol=1e-10)
    f = estimate_esd(model, x, storage="file", workdir=tmp_path, **kw)
    s = estimate_esd(model, x, storage="stream", **kw)
    assert f.storage == "file" and s.storage == "stream"
    assert not list(tmp_path.iterdir())  # the temporary 𝒥 file is removed
    for other in (f, s):
        np.testing.assert_allclose(other.nodes, mem.nodes, rtol=1e-9, atol=1e-15)
        np.testing.assert_allclose(other.top_eigenvalues, mem.top_eigenvalues, rtol=1e-9)
    assert np.isfinite(s.trace)  # stream: the stochastic estimate (no extra pass)


def test_auto_picks_exact_when_small() -> None:
    est = estimate_esd(_model(), _x(60), dtype=torch.float64)
    assert est.method == "exact" and est.storage is None and "fits" in est.reason


def test_the_users_model_is_run_as_given() -> None:
    """No .eval()/.train() on the user's model (a train-mode model without BatchNorm or
    Dropout is batch-independent and is analysed as it is)."""
    model, x = _model(), _x(40)
    model.train()

    def refuse(mode: bool = True) -> nn.Module:
        raise AssertionError(f"jacspec called model.train({mode})")

    model.train = refuse  # type: ignore[method-assign]  # .eval() calls .train(False)
    est = estimate_esd(model, x, method="slq", num_steps=10, num_vectors=2)
    assert model.training and est.method == "slq"
    ex = estimate_esd(model, x, method="exact")
    assert est.lambda_max == pytest.approx(ex.lambda_max, rel=1e-8)


def test_float64_model_without_dtype_runs_in_float64() -> None:
    model, x = _model(), _x(60)  # float64 model, dtype=None
    est = estimate_esd(model, x, method="slq", storage="stream", num_steps=10, num_vectors=2)
    ref = _reference_eigs(model, x)
    assert est.params["dtype"] == "float64"
    assert est.lambda_max == pytest.approx(ref[0], rel=1e-10)
