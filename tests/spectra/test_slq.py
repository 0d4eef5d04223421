"""Lanczos, SLQ, top-k and trace estimators against dense references (float64)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from jacspec.spectra.lanczos import lanczos, random_vectors, top_eigenvalues
from jacspec.spectra.operators import gram_operator, softmax_null_projector
from jacspec.spectra.slq import cdf_distance, slq, slq_density, spectral_density
from jacspec.spectra.traces import hutchinson_trace, hutchpp_trace


def _sym(dim: int, seed: int, decay: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """A = U diag(lam) U^T with a decaying, known spectrum."""
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    lam = np.sort(rng.gamma(0.7, 1.0, dim) * np.linspace(1, 1 / (1 + decay * 10), dim))[::-1]
    return (U * lam) @ U.T, lam


def _gram(n: int, kd: int, seed: int) -> np.ndarray:
    """Gaussian rows with uneven column scales (a Marchenko-Pastur-like spectrum)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, kd)) * rng.uniform(0.5, 1.5, kd)


def test_lanczos_tridiagonal_is_projection() -> None:
    A, _ = _sym(60, 0)
    V = random_vectors(60, 3, seed=1)
    run = lanczos(A, V, 12, store_images=True)
    assert run.num_passes == 12
    for i in range(3):
        Q = run.basis[i, : run.steps[i]]
        np.testing.assert_allclose(Q @ Q.T, np.eye(Q.shape[0]), atol=1e-12)
        a, b = run.tridiagonal(i)
        T = np.diag(a) + np.diag(b, 1) + np.diag(b, -1)
        np.testing.assert_allclose(Q @ A @ Q.T, T, atol=1e-10)
        np.testing.assert_allclose(run.images[i, : run.steps[i]], Q @ A, atol=1e-12)
        np.testing.assert_allclose(Q[0], V[:, i] / np.linalg.norm(V[:, i]), atol=1e-14)


def test_lanczos_stops_on_invariant_subspace() -> None:
    lam = np.repeat([1.0, 2.0, 5.0], 10)  # 3 distinct eigenvalues: Krylov dim <= 3
    run = lanczos(np.diag(lam), random_vectors(30, 2, seed=0), 20)
    assert list(run.steps) == [3, 3]
    q = slq(np.diag(lam), 20, 4, seed=0)
    nodes, w = q.flat()
    assert np.all(np.min(np.abs(nodes[:, None] - np.array([1.0, 2.0, 5.0])), axis=1) < 1e-10)


@pytest.mark.parametrize("method", ["lanczos", "subspace"])
def test_top_eigenvalues_vs_eigvalsh(method: str) -> None:
    J = _gram(300, 120, 2)
    op = gram_operator(J, side="primal")
    ref = np.linalg.eigvalsh(J @ J.T / 300)[::-1][:6]
    steps = 12 if method == "lanczos" else 40
    top = top_eigenvalues(op, 6, num_steps=steps, block_size=10, seed=3, method=method)
    rtol = 1e-8 if method == "lanczos" else 1e-3
    np.testing.assert_allclose(top.values, ref, rtol=rtol)
    assert top.num_passes == steps and top.num_matvecs == 10 * steps
    assert np.all(top.residuals < 1e-3 * ref[0]) if method == "lanczos" else True
    json.dumps(top.to_dict())


def test_slq_block_krylov_top_k() -> None:
    J = _gram(250, 400, 4)
    op = gram_operator(J, side="dual")  # 400 x 400, rank 250
    ref = np.linalg.eigvalsh(J.T @ J / 250)[::-1][:5]
    q = slq(op, 30, 6, seed=0, top_k=5)
    assert op.num_passes == 30  # the top-k came from the same passes
    np.testing.assert_allclose(q.top.values, ref, rtol=1e-6)


def test_hutchinson_close_to_trace() -> None:
    A, lam = _sym(200, 5)
    exact = lam.sum()
    for dist in ("rademacher", "normal"):
        est = hutchinson_trace(A, 400, seed=1, distribution=dist, block_size=128)
        assert est.num_matvecs == 400 and est.method == "hutchinson"
        assert abs(est.value - exact) < 4 * est.stderr
        assert abs(est.value - exact) / exact < 0.05


def test_hutchpp_beats_hutchinson_on_low_rank() -> None:
    J = _gram(40, 300, 6)
    op = gram_operator(J, side="dual")  # rank 40
    exact = np.trace(J.T @ J / 40)
    errs_pp, errs_h = [], []
    for seed in range(5):
        errs_pp.append(abs(hutchpp_trace(op, 150, seed=seed).value - exact))
        errs_h.append(abs(hutchinson_trace(op, 150, seed=seed).value - exact))
    assert np.mean(errs_pp) < 1e-6 * exact  # 50 sketch vectors capture all 40 directions
    assert np.mean(errs_h) > np.mean(errs_pp)


def test_slq_cdf_close_to_exact_esd() -> None:
    J = _gram(1000, 800, 7)
    A = J.T @ J / 1000
    ev = np.linalg.eigvalsh(A)
    op = gram_operator(J, side="dual")
    q = slq(op, 60, 16, seed=0)
    assert op.num_passes == 60
    nodes, w = q.flat()
    np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-12)
    assert cdf_distance(ev, nodes, None, w) < 0.04  # sampling noise ~ 1/sqrt(dim * vectors)
    coarse = slq(op, 4, 16, seed=0)
    assert cdf_distance(ev, *coarse.flat()[:1], None, coarse.flat()[1]) > 0.1
    # the quadrature trace is Hutchinson with the same vectors
    assert abs(q.trace - ev.sum()) < 4 * q.trace_stderr
    assert q.lambda_max == pytest.approx(ev[-1], rel=1e-10)
    np.testing.assert_allclose(q.cdf(ev[-1] * (1 + 1e-9)), 1.0)
    assert q.cdf(0.0) == 0.0


def test_slq_with_atom_at_zero_and_deflation() -> None:
    """Softmax-like structure: rows orthogonal to class-constant vectors, so 1/k of the dual
    spectrum is an exact atom at 0; deflating it recovers the atom exactly."""
    k, d, n = 5, 100, 600
    P = softmax_null_projector(k, d)
    J = P(_gram(n, k * d, 8).T).T  # (n, k*d) with rows in range(P)
    A = J.T @ J / n
    ev = np.clip(np.linalg.eigvalsh(A), 0, None)
    op = gram_operator(J, side="dual")
    plain = slq(op, 40, 16, seed=1)
    defl = slq(op, 40, 16, seed=1, project=P, null_dim=d)
    nodes, w = defl.flat()
    assert w[nodes == 0].sum() == pytest.approx(1 / k)
    ks_defl = cdf_distance(ev, nodes, None, w, zero_tol=1e-8)
    ks_plain = cdf_distance(ev, *plain.flat()[:1], None, plain.flat()[1], zero_tol=1e-8)
    assert ks_defl < 0.03
    assert ks_defl <= ks_plain + 1e-12
    assert abs(defl.trace - ev.sum()) < 4 * defl.trace_stderr


def test_seeds_reproduce() -> None:
    A, _ = _sym(80, 9)
    a = slq(A, 10, 3, seed=5)
    b = slq(A, 10, 3, seed=5)
    c = slq(A, 10, 3, seed=6)
    np.testing.assert_array_equal(a.nodes, b.nodes)
    assert not np.allclose(a.nodes, c.nodes)
    g = np.random.default_rng(0)
    assert random_vectors(5, 2, seed=g).shape == (5, 2)
    assert set(np.unique(random_vectors(50, 3, seed=0))) == {-1.0, 1.0}


def test_density_normalisation_and_log_scale() -> None:
    J = _gram(100, 300, 10)  # dual 300 x 300, rank 100: atom 2/3 at zero
    d = slq_density(gram_operator(J, side="dual"), 40, 8, seed=0, num_points=2000)
    dx = d.grid[1] - d.grid[0]
    assert d.density.sum() * dx == pytest.approx(1.0, abs=2e-3)
    assert d.params["method"] == "slq" and d.params["num_vectors"] == 8
    ev = np.linalg.eigvalsh(J.T @ J / 100)
    ex = spectral_density(ev, grid=np.linspace(1e-3, 1.0, 5), log_scale=True, zero_tol=1e-8)
    assert ex.zero_mass == pytest.approx(2 / 3)
    dl = spectral_density(ev, log_scale=True, zero_tol=1e-8, num_points=4000)
    assert dl.density.sum() * (dl.grid[1] - dl.grid[0]) == pytest.approx(1 / 3, abs=2e-3)
    json.dumps(dl.to_dict())
    assert list(d.to_frame().columns) == ["x", "density"]


def test_cdf_distance_matches_scipy_ks() -> None:
    rng = np.random.default_rng(11)
    a, b = rng.standard_normal(300), rng.standard_normal(200) + 0.2
    assert cdf_distance(a, b) == pytest.approx(stats.ks_2samp(a, b).statistic, abs=1e-12)
    # weights: a law with weights equals the law with repeated values
    vals = np.array([0.0, 1.0, 2.0])
    assert cdf_distance(vals, np.array([0, 1, 1, 2.0]), np.array([1, 2, 1.0])) == 0.0


def test_bad_arguments() -> None:
    A, _ = _sym(10, 0)
    with pytest.raises(ValueError, match="num_steps"):
        slq(A, 0, 2)
    with pytest.raises(ValueError, match="distribution"):
        slq(A, 3, 2, distribution="uniform")
    with pytest.raises(ValueError, match="method"):
        top_eigenvalues(A, 2, method="power")
    with pytest.raises(ValueError, match="k must be"):
        top_eigenvalues(A, 11)
    with pytest.raises(ValueError, match="null_dim"):
        slq(A, 3, 2, null_dim=2)
    with pytest.raises(ValueError, match="at least 3"):
        hutchpp_trace(A, 2)
    with pytest.raises(TypeError, match="seed"):
        slq(A, 3, 2, seed="x")
    with pytest.raises(ValueError, match="start"):
        lanczos(A, np.zeros((10, 1)), 3)
