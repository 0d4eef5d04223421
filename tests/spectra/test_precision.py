"""Numbers that must not depend on the Jacobian's precision (float32 against float64).

The rank rule is re-derived here from Weyl's inequality for singular values: a true zero
eigenvalue of G = J^T J shows at most ||dJ||^2 when J carries an error dJ, so float32 rows
(Gram formed in float64) resolve eigenvalues far below the old ``dim * eps32 * lambda_max``.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch

from jacspec.analysis import analyze
from jacspec.data.datasets import load_dataset
from jacspec.heavytail.nulls import fit_mp
from jacspec.jacobian.engine import data_jacobian
from jacspec.models.builders import mlp
from jacspec.models.train import train
from jacspec.spectra.eigen import finish_eigenvalues, rank_tolerance
from jacspec.spectra.gram import class_sum_complement, deflate_rows

COLUMNS = ("rank", "entropy", "num_spikes", "alpha")


@pytest.fixture(scope="module")
def saturated() -> tuple[torch.nn.Module, torch.Tensor]:
    """An MLP trained on 400 digits to 100% train accuracy and cross-entropy <= 1e-3
    (saturated outputs: many 1 - p_max near float32's resolution 6e-8 near 1)."""
    data = load_dataset("digits", "train", n=400, seed=0)
    model = mlp(data.input_shape, data.num_classes, width=64, depth=2, seed=0)
    res = train(model, data, lr=1e-2, seed=0, max_epochs=2000, target_loss=1e-3, threads=1)
    assert res.train_accuracy == 1.0 and res.train_loss <= 1e-3
    return model, data.x.float()


def test_float32_and_float64_tables_agree_on_a_saturated_network(saturated) -> None:
    model, x = saturated
    with torch.no_grad():
        p = torch.softmax(model(x).double(), dim=-1)
    assert float((1 - p.max(dim=1).values).median()) < 1e-3  # saturated
    t32 = analyze(model, x, seed=0).table.loc["input->output"]
    t64 = analyze(model, x, seed=0, dtype=torch.float64).table.loc["input->output"]
    assert t32["dtype"] == "float32" and t64["dtype"] == "float64"
    assert t64["unresolved"] == ""
    flagged = set(filter(None, t32["unresolved"].split(",")))
    if "entropy" not in flagged:
        assert abs(t32["entropy"] - t64["entropy"]) <= 0.02
    if "rank" not in flagged:
        assert abs(t32["rank"] - t64["rank"]) <= 0.05 * t64["rank"]
    else:
        assert "float32 could not resolve" in t32["warning"]
    if "num_spikes" not in flagged:
        assert abs(t32["num_spikes"] - t64["num_spikes"]) <= 0.10 * t64["num_spikes"]
    else:  # the MP fit takes eigenvalues below tol as zeros: unresolved with the rank
        assert "rank" in flagged and t32["num_spikes"] <= t32["rank"]
        assert "num_spikes" in t32["warning"]
    assert abs(t32["alpha"] - t64["alpha"]) <= 0.05 * t64["alpha"]
    # the old rule (dim * eps32 * lambda_max) kept a fraction of the accurate eigenvalues
    e = analyze(model, x, seed=0, randomize=False).esds["input->output"]
    old_tol = e.eigenvalues[0] * e.eigenvalues.size * float(np.finfo(np.float32).eps)
    assert int((e.eigenvalues > old_tol).sum()) < min(0.8 * t64["rank"], t32["rank"])


def test_float32_eigenvalues_above_the_floor_are_accurate(saturated) -> None:
    """Independent check of the rule: eigenvalues of the float32 Gram above the tolerance
    match the float64 ones within the bound 2 sqrt(lambda) ||dJ|| + ||dJ||^2."""
    model, x = saturated
    q = class_sum_complement(10)
    rows = {}
    for dt in (torch.float32, torch.float64):
        J = data_jacobian(model.to(dt), x.to(dt))
        rows[dt] = deflate_rows(J.reshape(x.shape[0], 10, -1), q).to(torch.float64)
    model.float()
    n = x.shape[0]
    lam = {
        dt: np.sort(np.linalg.eigvalsh((r @ r.T).numpy() / n))[::-1] for dt, r in rows.items()
    }
    dJ = float(torch.linalg.matrix_norm(rows[torch.float32] - rows[torch.float64], 2))
    ref, got = lam[torch.float64], lam[torch.float32]
    bound = (2 * np.sqrt(ref * n) * dJ + dJ**2) / n + 1e-13 * ref[0]
    assert np.all(np.abs(got - ref) <= bound)
    # saturated softmax rows exceed the a priori factor; their class-sum residual measures it
    resid2 = float(data_jacobian(model, x).reshape(n, 10, -1).double().sum(dim=1).square().sum())
    assert dJ**2 <= resid2
    tol = rank_tolerance(float(got[0]), got.size, "float32", jac_error2=resid2 / n)
    assert tol >= dJ**2 / n
    assert np.all(ref[got <= tol] <= 4 * tol)  # cut values are at most a few tol in truth
    big = got > 1e4 * tol  # relative error <= 2 sqrt(tol / lambda) + tol / lambda ~ 0.02
    assert big.sum() > 10
    np.testing.assert_allclose(got[big], ref[big], rtol=0.03)


def test_rank_rule_formula_and_underflow_warning(caplog: pytest.LogCaptureFixture) -> None:
    eps32, eps64 = float(np.finfo(np.float32).eps), float(np.finfo(np.float64).eps)
    assert rank_tolerance(2.0, 100, "float32") == pytest.approx(
        2.0 * ((64 * eps32) ** 2 + 100 * eps64)
    )
    assert rank_tolerance(2.0, 100, "float64") == pytest.approx(
        2.0 * ((64 * eps64) ** 2 + 100 * eps64)
    )
    raw = np.array([1e-30, 1e-31, 0.0])
    with caplog.at_level(logging.WARNING, logger="jacspec.spectra.eigen"):
        finish_eigenvalues(raw, n=1, kd=3, scale="none", dtype="float32")
    assert "underflow" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="jacspec.spectra.eigen"):
        finish_eigenvalues(raw, n=1, kd=3, scale="none", dtype="float64")
    assert "underflow" not in caplog.text


@pytest.mark.parametrize("spike", [50.0, 1e6, 1e12])
def test_mp_fit_on_a_spiked_matrix_recovers_sigma2(spike: float) -> None:
    """Gaussian rows x cols matrix (variance 1) plus three rank-one spikes: the MP fit over
    all eigenvalues gives sigma^2 ~ 1 and the bulk edge derived here independently."""
    rng = np.random.default_rng(0)
    rows, cols = 800, 400
    a = rng.standard_normal((rows, cols))
    for s in (spike, spike / 2, spike / 4):
        u = rng.standard_normal(rows)
        v = rng.standard_normal(cols)
        a += math.sqrt(s * rows) * np.outer(u / np.linalg.norm(u), v / np.linalg.norm(v))
    # eigenvalues of A^T A / rows (the nonzero part of A A^T / rows): min(rows, cols) of them
    ev = np.sort(np.linalg.eigvalsh(a.T @ a / rows))[::-1]
    Q = rows / cols
    fit = fit_mp(ev, Q, rows=rows)
    assert fit.sigma2 == pytest.approx(1.0, abs=0.05)
    # MP for A^T A / rows with iid variance sigma^2: edge sigma^2 (1 + sqrt(cols/rows))^2
    assert fit.lambda_plus == pytest.approx(fit.sigma2 * (1 + math.sqrt(cols / rows)) ** 2)
    assert fit.num_spikes == 3
    # what the old analyze passed (eigenvalues above dim * eps32 * lambda_max only) was biased
    kept = ev[ev > ev.size * float(np.finfo(np.float32).eps) * ev[0]]
    if kept.size >= 3:
        assert abs(fit_mp(kept, Q, rows=rows).sigma2 - 1.0) > 0.05 or spike < 1e3
