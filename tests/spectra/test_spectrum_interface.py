"""One interface for exact and estimated spectra (``Spectrum``), one exact eigensolve, and the
result contract of the spectra layer's results. References are dense float64 computations
written out here (autograd Jacobian rows, numpy's eigvalsh)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from jacspec.heavytail.nulls import matrix_esd
from jacspec.spectra.eigen import exact_eigenvalues
from jacspec.spectra.esd_estimate import ESDEstimate
from jacspec.spectra.estimate import estimate_esd
from jacspec.spectra.exact import ESD, esd, esd_from_gram
from jacspec.spectra.gram import gram
from jacspec.spectra.lanczos import lanczos, random_vectors, top_eigenvalues
from jacspec.spectra.metrics import METRIC_COLUMNS
from jacspec.spectra.plan import plan_esd
from jacspec.spectra.slq import slq, spectral_density
from jacspec.spectra.spectrum import SPECTRUM_ATTRIBUTES, Spectrum
from jacspec.spectra.traces import hutchinson_trace, hutchpp_trace

K, D, N = 4, 10, 120  # kd = 40 < n: dual side


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(D, 16), nn.Tanh(), nn.Linear(16, K)).double().eval()


def _x() -> torch.Tensor:
    return torch.randn(N, D, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def _rows(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """The data Jacobian of the softmax output, one autograd Jacobian per example."""
    rows = [
        torch.autograd.functional.jacobian(lambda z: torch.softmax(model(z[None]), 1)[0], xi)
        .reshape(-1).numpy()
        for xi in x
    ]
    return np.stack(rows)


@pytest.fixture(scope="module")
def spectra() -> dict[str, Spectrum]:
    model, x = _model(), _x()
    return {
        "esd": esd(model, x, dtype=torch.float64),
        "estimate_exact": estimate_esd(model, x, method="exact", dtype=torch.float64),
        "slq": estimate_esd(model, x, method="slq", dtype=torch.float64, num_steps=30,
                            num_vectors=16, top_k=4, seed=2),
    }


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    J = _rows(_model(), _x())
    return np.sort(np.linalg.eigvalsh(J @ J.T / N))[::-1][: K * D]


@pytest.mark.parametrize("kind", ["esd", "estimate_exact", "slq"])
def test_every_spectrum_offers_the_interface(spectra, kind: str) -> None:
    s = spectra[kind]
    assert isinstance(s, Spectrum)
    for name in SPECTRUM_ATTRIBUTES:
        assert hasattr(s, name), name
    assert s.method == ("slq" if kind == "slq" else "exact")
    assert s.n == N and s.side == "dual" and s.scale == "n"
    assert (s.eigenvalues is None) == (kind == "slq")
    json.dumps(s.settings)
    # cdf: a distribution function on [0, 1], nondecreasing, 0 below and 1 at lambda_max
    xs = np.linspace(-1.0, 2.0, 301) * s.lambda_max
    F = s.cdf(xs)
    assert np.all(np.diff(F) >= 0) and F.min() >= 0 and F.max() <= 1
    assert s.cdf(-1e-3 * s.lambda_max) == 0 and s.cdf(s.lambda_max * (1 + 1e-9)) == pytest.approx(1)
    # density: the Gaussian broadening of the law integrates to 1 over the padded support
    grid = s.density_grid(4001)
    dens = s.density(grid)
    assert np.all(dens >= 0)
    assert np.trapezoid(dens, grid) == pytest.approx(1.0, abs=1e-3)
    # by hand: sum_j w_j N(x; x_j, sigma^2) at one point
    nodes, w = s.measure()
    sig, x0 = 0.05 * s.lambda_max, 0.3 * s.lambda_max
    by_hand = np.sum(w * np.exp(-0.5 * ((x0 - nodes) / sig) ** 2)) / (sig * math.sqrt(2 * math.pi))
    assert s.density(np.array([x0]), sigma=sig)[0] == pytest.approx(by_hand, rel=1e-12)
    # metrics: the same columns for both kinds
    m = s.metrics()
    assert list(m) == list(METRIC_COLUMNS)
    assert m["trace"] == pytest.approx(s.trace) and m["lambda_max"] == pytest.approx(s.lambda_max)
    assert m["stable_rank"] == pytest.approx(s.trace / s.lambda_max)
    assert m["log_norm"] == pytest.approx(math.log10(s.trace))
    assert m["log_spectral_norm"] == pytest.approx(math.log10(s.lambda_max))
    # the result contract
    summary = s.summary()
    assert json.loads(json.dumps(summary, allow_nan=False)) == summary
    for key in ("method", "n", "side", "scale", *METRIC_COLUMNS):
        assert key in summary
    d = s.to_dict()
    assert json.loads(json.dumps(d, allow_nan=False)) == d
    assert isinstance(s.to_frame(), pd.DataFrame)


def test_exact_and_slq_agree_on_trace_lambda_max_and_cdf(spectra, reference) -> None:
    ex, es = spectra["esd"], spectra["slq"]
    np.testing.assert_allclose(ex.eigenvalues, reference, rtol=1e-9, atol=1e-14 * reference[0])
    # SLQ: trace is ||J||_F^2 / n computed exactly (J stored), lambda_max the top Ritz value
    assert es.trace == pytest.approx(reference.sum(), rel=1e-10)
    assert es.lambda_max == pytest.approx(reference[0], rel=1e-8)
    assert ex.trace == pytest.approx(reference.sum(), rel=1e-10)
    assert ex.lambda_max == pytest.approx(reference[0], rel=1e-10)
    # the two laws: Kolmogorov-Smirnov distance of the CDFs on the eigenvalues (start-vector
    # noise only: 30 steps exhaust the 30-dim range of the deflated dual Gram)
    pts = np.concatenate([reference, es.nodes])
    assert np.max(np.abs(ex.cdf(pts) - es.cdf(pts))) < 0.15


def test_estimated_metrics_are_nan_where_slq_cannot_give_them(spectra) -> None:
    m = spectra["slq"].metrics()
    for key in ("rank", "entropy", "effective_rank"):
        assert math.isnan(m[key])
    assert m["num_evals"] == K * D
    assert spectra["slq"].summary()["rank"] is None  # NaN -> None in JSON
    ex = spectra["estimate_exact"].metrics()
    assert ex == pytest.approx(spectra["esd"].metrics())


def test_estimate_density_on_its_grid_is_its_stored_density(spectra) -> None:
    for key in ("slq", "estimate_exact"):
        e = spectra[key]
        np.testing.assert_allclose(e.density(e.grid), e.grid_density, rtol=1e-12, atol=1e-300)


def test_one_exact_eigensolve_behind_every_exact_path() -> None:
    model, x = _model(), _x()
    g = gram(model, x, dtype=torch.float64)
    direct = exact_eigenvalues(g.matrix, n=g.n, scale="n", dtype=g.dtype,
                               known_zeros=g.num_known_zeros)
    e = esd_from_gram(g)
    np.testing.assert_array_equal(e.eigenvalues, direct.values)
    assert (e.rank, e.tol, e.unresolved) == (direct.rank, direct.tol, direct.unresolved)
    est = estimate_esd(model, x, method="exact", dtype=torch.float64)
    np.testing.assert_array_equal(est.nodes, esd(model, x, dtype=torch.float64).eigenvalues)
    # heavytail's matrix_esd runs the same solve (float64 rule) on an explicit matrix
    J = _rows(model, x)
    np.testing.assert_allclose(matrix_esd(J), np.sort(np.linalg.eigvalsh(J.T @ J / N))[::-1]
                               .clip(0), rtol=0, atol=1e-13 * e.lambda_max)


def test_exact_eigenvalues_rank_rule_and_clip() -> None:
    # diag(4, 1, 1e-3, 1e-12, -1e-15) in float32-Jacobian terms; rule re-expressed here:
    # tol = lambda_max ((64 eps32)^2 + dim eps64)
    raw = np.diag([4.0, 1.0, 1e-3, 1e-12, -1e-15])
    out = exact_eigenvalues(raw, n=2, scale="n", dtype="float32", known_zeros=1)
    lam = 2.0
    tol = lam * ((64 * np.finfo(np.float32).eps) ** 2 + 6 * np.finfo(np.float64).eps)
    assert out.tol == pytest.approx(tol, rel=1e-12)
    np.testing.assert_allclose(out.values, [2.0, 0.5, 5e-4, 5e-13, 0.0, 0.0], rtol=1e-12)
    assert out.clipped == 1 and out.rank == 3
    assert "rank" in out.unresolved  # the 5e-13 one is below float32's floor


def _check_contract(result) -> None:
    json.dumps(result.settings)
    d = result.to_dict()
    assert json.loads(json.dumps(d, allow_nan=False)) == d
    s = result.summary()
    assert isinstance(s, dict) and json.loads(json.dumps(s, allow_nan=False)) == s
    assert isinstance(result.to_frame(), pd.DataFrame)


def test_spectra_results_follow_the_contract(spectra) -> None:
    A = np.diag(np.linspace(0.0, 3.0, 40))
    for result in (
        *spectra.values(),
        lanczos(A, random_vectors(40, 3, seed=0), 10, store_images=True),
        slq(A, 10, 4, seed=0, top_k=2),
        slq(A, 10, 4, seed=0, top_k=2).top,
        spectral_density(np.linspace(0, 1, 5)),
        top_eigenvalues(A, 3, num_steps=5),
        hutchinson_trace(A, 8),
        hutchpp_trace(A, 9),
        plan_esd(100, 40),
    ):
        _check_contract(result)
    assert plan_esd(100, 40).settings["n"] == 100


def test_plot_draws_both_kinds(spectra) -> None:
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from jacspec.report.esd_plots import plot_esd_estimate

    for s in spectra.values():
        assert isinstance(s.plot(), Figure)
    assert isinstance(plot_esd_estimate(spectra["esd"]), Figure)  # any Spectrum


def test_types() -> None:
    assert issubclass(ESD, Spectrum) and issubclass(ESDEstimate, Spectrum)
