"""Tests for jacspec.heavytail.mp and .randomized (re-exported by .nulls): MP law against
closed forms and random matrices, spike detection, the randomized null (reproducibility,
shuffling, traps) and the ESD distance."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.integrate import trapezoid

from jacspec.heavytail.mp import MPFit, fit_mp, mp_density, mp_edges, mp_quantile
from jacspec.heavytail.randomized import (
    RandomizedNull,
    esd_distance,
    jensen_shannon_distance,
    matrix_esd,
    randomized_null,
    shuffle_entries,
)


@pytest.mark.parametrize("Q", [0.25, 1.0, 2.0, 8.0])
def test_mp_density_normalised_with_closed_form_mean(Q: float) -> None:
    lo, hi = mp_edges(Q, 2.0)
    assert lo == pytest.approx(2.0 * (1 - 1 / math.sqrt(Q)) ** 2)
    assert hi == pytest.approx(2.0 * (1 + 1 / math.sqrt(Q)) ** 2)
    # substitution x = lo + (hi - lo)(1 - cos t)/2 to integrate across the edge singularities
    t = np.linspace(0, math.pi, 200001)
    x = lo + 0.5 * (hi - lo) * (1 - np.cos(t))
    dx = 0.5 * (hi - lo) * np.sin(t)
    f = mp_density(x, Q, 2.0) * dx
    mass = trapezoid(f, t)
    mean = trapezoid(f * x, t)
    assert mass == pytest.approx(1.0, abs=1e-3)
    # nonzero eigenvalues of A A^T / rows: mean = sigma^2 * max(1, cols/rows)
    assert mean == pytest.approx(2.0 * max(1.0, 1.0 / Q), rel=1e-3)


def test_mp_quantile_endpoints_and_monotone() -> None:
    q = mp_quantile(np.linspace(0, 1, 11), 4.0, 3.0)
    lo, hi = mp_edges(4.0, 3.0)
    assert q[0] == pytest.approx(lo) and q[-1] == pytest.approx(hi)
    assert np.all(np.diff(q) > 0)


@pytest.mark.parametrize("rows, cols", [(1200, 300), (300, 1200), (400, 400)])
def test_mp_fit_on_gaussian_matrix(rows: int, cols: int) -> None:
    rng = np.random.default_rng(rows + cols)
    sigma = 0.7
    a = sigma * rng.standard_normal((rows, cols))
    ev = matrix_esd(a)
    fit = fit_mp(ev, rows / cols, rows=rows)
    assert fit.sigma2 == pytest.approx(sigma**2, rel=0.03)
    theory = sigma**2 * (1 + math.sqrt(cols / rows)) ** 2
    assert fit.lambda_plus == pytest.approx(theory, rel=0.03)
    assert ev[0] == pytest.approx(theory, rel=0.05)  # the ESD edge is where theory says
    assert fit.num_spikes == 0
    assert fit.mp_softrank == pytest.approx(fit.lambda_plus / ev[0])
    assert 0.9 < fit.mp_softrank < 1.1


def test_mp_fit_finds_planted_spikes() -> None:
    rng = np.random.default_rng(5)
    rows, cols = 900, 300
    a = rng.standard_normal((rows, cols))
    u = np.linalg.qr(rng.standard_normal((rows, 3)))[0]
    v = np.linalg.qr(rng.standard_normal((cols, 3)))[0]
    strengths = np.array([6.0, 4.0, 3.0]) * math.sqrt(rows)  # well above the BBP threshold
    b = a + u @ np.diag(strengths) @ v.T
    ev = matrix_esd(b)
    fit = fit_mp(ev, rows / cols, rows=rows)
    assert fit.num_spikes == 3
    assert np.allclose(fit.spikes, ev[:3])
    assert fit.sigma2 == pytest.approx(1.0, rel=0.03)
    assert fit.mp_softrank < 0.2
    d = json.loads(json.dumps(fit.to_dict()))
    assert d["num_spikes"] == 3 and len(d["spikes"]) == 3
    assert isinstance(fit, MPFit)


def test_mp_fit_infers_shape_and_ignores_zeros() -> None:
    rng = np.random.default_rng(1)
    a = rng.standard_normal((200, 600))  # 200 x 200 side, Q = 1/3
    ev = matrix_esd(a)
    with_zeros = np.concatenate([ev, np.zeros(50)])
    fit = fit_mp(ev, 200 / 600)
    assert (fit.rows, fit.cols) == (200, 600)
    fz = fit_mp(with_zeros, 200 / 600, rows=200)
    # the 50 values beyond min(rows, cols) = 200 are the larger side's zeros: left out
    assert fz.num_evals == 200 and fz.num_zeros == 0
    assert fz.sigma2 == pytest.approx(fit.sigma2)


@pytest.mark.parametrize(
    "ev, Q, kwargs",
    [
        ([1.0, 2.0, np.nan], 1.0, {}),
        ([0.0, 0.0, 0.0], 1.0, {}),
        ([1.0, 2.0], 1.0, {}),
        ([1.0, 2.0, 3.0], -1.0, {}),
        ([1.0, 2.0, 3.0], 1.0, {"sigma2": -1.0}),
        ([1.0, 2.0, 3.0], 1.0, {"tw_tolerance": -1.0}),
    ],
)
def test_mp_fit_bad_input(ev: list, Q: float, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        fit_mp(ev, Q, **kwargs)


def test_matrix_esd_matches_dense_eigensolver_both_sides() -> None:
    rng = np.random.default_rng(2)
    for shape in [(30, 80), (80, 30)]:
        a = rng.standard_normal(shape)
        ev = matrix_esd(a)
        ref = np.sort(np.linalg.eigvalsh(a @ a.T / shape[0]))[::-1][: min(shape)]
        assert ev.shape == (min(shape),)
        assert np.allclose(ev, ref, atol=1e-10)
        raw = matrix_esd(a, scale="none")
        assert np.allclose(raw, ev * shape[0])


def test_shuffle_is_a_seeded_permutation() -> None:
    a = np.arange(24.0).reshape(4, 6)
    r1 = shuffle_entries(a, 3)
    r2 = shuffle_entries(a, 3)
    expected = a.ravel()[np.random.default_rng(3).permutation(24)].reshape(4, 6)
    assert np.array_equal(r1, r2) and np.array_equal(r1, expected)
    assert np.array_equal(np.sort(r1.ravel()), a.ravel())
    assert not np.array_equal(shuffle_entries(a, 4), r1)


def test_randomized_null_reproducible_and_torch_equal() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((120, 200))
    n1 = randomized_null(a, seed=7)
    n2 = randomized_null(a, seed=7)
    n3 = randomized_null(torch.from_numpy(a), seed=7)
    n4 = randomized_null(a, seed=8)
    assert np.array_equal(n1.rand_eigenvalues, n2.rand_eigenvalues)
    assert np.array_equal(n1.rand_eigenvalues, n3.rand_eigenvalues)
    assert n1.rand_distance == n2.rand_distance
    assert not np.array_equal(n1.rand_eigenvalues, n4.rand_eigenvalues)
    ref = matrix_esd(a.ravel()[np.random.default_rng(7).permutation(a.size)].reshape(a.shape))
    assert np.allclose(n1.rand_eigenvalues, ref)
    assert isinstance(n1, RandomizedNull)
    d = json.loads(json.dumps(n1.to_dict()))
    assert "eigenvalues" not in d and d["seed"] == 7 and d["shape"] == [120, 200]
    assert len(n1.to_dict(eigenvalues=True)["rand_eigenvalues"]) == 120


def test_randomized_null_flags_structure_as_traps() -> None:
    rng = np.random.default_rng(3)
    rows, cols = 200, 320
    noise = rng.standard_normal((rows, cols))
    # rank-2 structure: shuffling spreads it over all entries, destroying the spikes
    low_rank = 8.0 * np.outer(rng.standard_normal(rows), rng.standard_normal(cols)) / math.sqrt(
        cols
    ) + 6.0 * np.outer(rng.standard_normal(rows), rng.standard_normal(cols)) / math.sqrt(cols)
    a = noise + low_rank
    null = randomized_null(a, seed=0)
    # jacspec's own count (named num_traps before): real eigenvalues above the randomized max
    assert null.num_above_rand_max == 2
    assert np.allclose(null.above_rand_max_values, null.eigenvalues[:2])
    assert all(v > null.rand_lambda_max for v in null.above_rand_max_values)
    pure = randomized_null(noise, seed=0)
    assert pure.num_above_rand_max <= 1  # iid noise: the shuffle changes little
    assert pure.rand_distance < null.rand_distance
    assert pure.rand_hist_jsd < null.rand_hist_jsd
    # WeightWatcher's num_traps: MP spikes of the *randomized* ESD (none: the shuffle is iid)
    assert null.num_traps == fit_mp(null.rand_eigenvalues, rows / cols, rows=rows).num_spikes
    assert null.num_traps == 0


def test_randomized_null_num_traps_counts_spikes_of_the_shuffled_matrix() -> None:
    """A huge-entry outlier survives the shuffle: the randomized ESD has an MP spike."""
    rng = np.random.default_rng(5)
    rows, cols = 300, 500
    a = rng.standard_normal((rows, cols))
    a[0, 0] = 200.0  # one entry: after shuffling still one rank-one spike ~ 200^2 / rows
    null = randomized_null(a, seed=1)
    ev = np.sort(np.linalg.eigvalsh(shuffle_entries(a, 1) @ shuffle_entries(a, 1).T / rows))
    lam_plus = (1 + math.sqrt(rows / cols)) ** 2 * (cols / rows)  # MP edge of R R^T / rows
    assert int(np.sum(ev > 1.2 * lam_plus)) == 1
    assert null.num_traps == 1


def test_rand_distance_is_weightwatchers_jensen_shannon_distance() -> None:
    """Re-expressed here: JS distance (natural log) of the sorted eigenvalue vectors
    normalised to sum 1; checked against WeightWatcher's own helper on the same arrays."""
    rng = np.random.default_rng(6)
    a = rng.standard_normal((60, 90)) + 3.0 * np.outer(rng.standard_normal(60), np.ones(90)) / 9
    null = randomized_null(a, seed=2)
    p = np.sort(null.eigenvalues)
    q = np.sort(null.rand_eigenvalues)
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2
    kl = lambda u: float(np.sum(u[u > 0] * np.log(u[u > 0] / m[u > 0])))  # noqa: E731
    assert null.rand_distance == pytest.approx(math.sqrt((kl(p) + kl(q)) / 2), rel=1e-12)
    assert jensen_shannon_distance(p, q) == pytest.approx(null.rand_distance, rel=1e-12)
    rmt = pytest.importorskip("weightwatcher.RMT_Util")
    ww = rmt.jensen_shannon_distance(np.sort(null.eigenvalues), np.sort(null.rand_eigenvalues))
    assert null.rand_distance == pytest.approx(float(ww), rel=1e-10)


def test_esd_distance_properties() -> None:
    rng = np.random.default_rng(4)
    x = rng.lognormal(size=500)
    assert esd_distance(x, x) == 0.0
    far = esd_distance(x, 1000.0 * x)
    assert far == pytest.approx(1.0, abs=1e-9)  # disjoint supports on log bins
    d1 = esd_distance(x, rng.lognormal(size=500))
    d2 = esd_distance(x, rng.lognormal(1.0, size=500))
    assert 0 < d1 < d2 < 1
    assert esd_distance(x, 2 * x, log_bins=False) == pytest.approx(
        esd_distance(2 * x, x, log_bins=False)
    )
    # hand-computed JSD of two 2-bin histograms: [1, 0] vs [1/2, 1/2]
    p, q = np.array([1.0, 0.0]), np.array([0.5, 0.5])
    m = (p + q) / 2

    def kl(u: np.ndarray) -> float:
        return sum(ui * math.log2(ui / mi) for ui, mi in zip(u, m, strict=True) if ui > 0)

    expected = math.sqrt(0.5 * (kl(p) + kl(q)))
    got = esd_distance([1.0, 1.0], [1.0, 3.0], bins=2, log_bins=False)
    assert got == pytest.approx(expected)


def test_randomized_null_bad_input() -> None:
    with pytest.raises(ValueError):
        randomized_null(np.ones(5))
    with pytest.raises(ValueError):
        randomized_null(np.full((3, 3), np.nan))
    with pytest.raises(ValueError):
        randomized_null(np.ones((3, 3)), scale="sqrt")


def test_nulls_module_re_exports_the_new_homes() -> None:
    """``jacspec.heavytail.nulls`` stays importable: the same objects as mp/randomized."""
    import jacspec.heavytail.mp as mp
    import jacspec.heavytail.nulls as nulls
    import jacspec.heavytail.randomized as randomized

    for name in nulls.__all__:
        home = mp if hasattr(mp, name) and name in mp.__all__ else randomized
        assert getattr(nulls, name) is getattr(home, name), name

