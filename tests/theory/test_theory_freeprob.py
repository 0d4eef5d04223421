"""Free-probability spectra of JJ^T against closed forms, power series, the polynomial
equations of piecewise-linear nets and exact one-layer laws."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import erf

from jacspec.theory import (
    critical_point,
    d2_law,
    jacobian_moments,
    jacobian_spectrum,
    lambda_max,
    mu_k,
    piecewise_linear_polynomial,
    universal_spectrum,
)
from jacspec.theory.freeprob import _master_residual
from jacspec.theory.solver import track

# critical settings used for the density checks
CRIT = {"relu": 0.0, "hard_tanh": 0.01, "erf": 0.05, "tanh": 2.01e-5}


def _series_moments(mu, s1, sigma_w2, depth):
    """m1, m2 of JJ^T by composing truncated power series of the S-transforms
    (independent of the closed form): S_{D^2} from M_{D^2} = mu1/z + mu2/z^2, then
    S_J = S_D^L S_W^L and M_J from its inverse."""
    mu1, mu2 = mu
    # chi(x) = M^{-1} in the variable x -> 0 as a series in x: z = 1/(mu1) ... use
    # M(z) = a x + b x^2 with x = 1/z; invert x(M) = M/mu1 - mu2 M^2/mu1^3 + O(M^3)
    # S(M) = (1 + M) x(M) / M = (1 + M)(1/mu1 - mu2 M/mu1^3) = 1/mu1 + M (1/mu1 - mu2/mu1^3)
    sd0, sd1 = 1 / mu1, 1 / mu1 - mu2 / mu1**3
    sw0, sw1 = 1 / sigma_w2, s1 / sigma_w2
    # product of L copies of each, first order: c0 (1 + L (sd1/sd0 + sw1/sw0) M)
    c0 = (sd0 * sw0) ** depth
    c1 = c0 * depth * (sd1 / sd0 + sw1 / sw0)
    # x(M) = M S(M) / (1 + M) = c0 M + (c1 - c0) M^2; invert: M = x/c0 - (c1 - c0) x^2/c0^3
    m1 = 1 / c0
    m2 = -(c1 - c0) / c0**3
    return m1, m2


@pytest.mark.parametrize("weights,s1", [("gaussian", -1.0), ("orthogonal", 0.0)])
@pytest.mark.parametrize("depth", [1, 3, 10])
def test_moment_formula_against_power_series(weights, s1, depth):
    mu = (0.6, 0.45)
    m1, m2 = jacobian_moments(*mu, 1.3, depth, weights)
    r1, r2 = _series_moments(mu, s1, 1.3, depth)
    assert m1 == pytest.approx(r1, rel=1e-12)
    assert m2 == pytest.approx(r2, rel=1e-12)


@pytest.fixture(scope="module")
def hard_tanh_crit():
    return critical_point("hard_tanh", 0.01)


@pytest.mark.parametrize("depth", [1, 2, 5, 16])
def test_critical_variances_closed_forms(depth, hard_tanh_crit):
    cp = hard_tanh_crit
    p = erf(1 / math.sqrt(2 * cp.q_star))
    for weights, s1 in (("gaussian", -1.0), ("orthogonal", 0.0)):
        lin = jacobian_moments(mu_k("linear", 1.0, 1), mu_k("linear", 1.0, 2), 1.0, depth,
                               weights)
        assert lin[1] - lin[0] ** 2 == pytest.approx(depth * (-s1), abs=1e-12)
        relu = jacobian_moments(mu_k("relu", 1.0, 1), mu_k("relu", 1.0, 2), 2.0, depth, weights)
        assert relu[1] - relu[0] ** 2 == pytest.approx(depth * (1 - s1), rel=1e-12)
        ht = jacobian_moments(mu_k("hard_tanh", cp.q_star, 1), mu_k("hard_tanh", cp.q_star, 2),
                              cp.sigma_w2, depth, weights)
        assert ht[0] == pytest.approx(1.0, abs=1e-9)
        assert ht[1] - ht[0] ** 2 == pytest.approx(depth * (1 / p - 1 - s1), rel=1e-8)
    # and the numerical densities carry these variances
    spec = jacobian_spectrum("linear", "gaussian", depth, 1.0, 0.0, num_points=200)
    var = spec.density_m2 - spec.density_m1**2
    assert var == pytest.approx(depth, rel=2e-3)


@pytest.mark.parametrize("depth", [1, 2, 3, 8, 64])
def test_lambda_max_gaussian_linear(depth):
    law = d2_law("linear", 1.0)
    expected = (depth + 1) ** (depth + 1) / depth**depth
    assert lambda_max(law, 1.0, depth, "gaussian") == pytest.approx(expected, rel=1e-9)


def test_marchenko_pastur_one_layer():
    grid = np.linspace(0.05, 3.95, 40)
    spec = jacobian_spectrum("linear", "gaussian", 1, 1.0, 0.0, grid=grid)
    mp = np.sqrt(4.0 / grid - 1.0) / (2 * math.pi)
    np.testing.assert_allclose(spec.density, mp, rtol=1e-4)


@pytest.mark.parametrize("weights", ["gaussian", "orthogonal"])
@pytest.mark.parametrize("name,depth", [("relu", 2), ("hard_tanh", 3)])
def test_piecewise_linear_polynomial_root(weights, depth, name):
    sb2 = CRIT[name]
    cp = critical_point(name, sb2)
    law = d2_law(name, cp.q_star)
    p = sum(m for v, m in law.atoms() if v > 0)
    res = _master_residual(law, cp.sigma_w2, depth, weights)
    grid = np.array([0.05, 0.3, 0.9, 1.7])
    z, u, _ = track(res, grid, m1=1.0, eta=1e-3)
    for zi, ui in zip(z, u, strict=True):
        g = ui / zi
        coef = piecewise_linear_polynomial(zi, p, cp.sigma_w2, depth, weights)
        scale = np.sum(np.abs(coef) * np.abs(g) ** np.arange(coef.size - 1, -1, -1))
        assert abs(np.polyval(coef, g)) <= 1e-10 * scale
        assert g.imag < 0


@pytest.mark.parametrize("name", ["relu", "hard_tanh", "erf", "tanh"])
@pytest.mark.parametrize("weights", ["gaussian", "orthogonal"])
@pytest.mark.parametrize("depth", [1, 4, 16, 64])
def test_density_mass_and_moments(name, weights, depth):
    sb2 = CRIT[name]
    cp = critical_point(name, sb2)
    spec = jacobian_spectrum(name, weights, depth, cp.sigma_w2, sb2, num_points=300)
    assert abs(spec.total_mass - 1.0) <= 1e-3
    assert spec.density_m1 == pytest.approx(spec.m1, rel=1e-2)
    assert spec.density_m2 == pytest.approx(spec.m2, rel=1e-2)
    assert np.all(spec.density >= 0)


def test_atoms_piecewise_linear():
    relu = jacobian_spectrum("relu", "gaussian", 3, 2.0, 0.0, num_points=64, refine=False)
    assert [a["at"] for a in relu.atoms] == [0.0]
    assert relu.atoms[0]["mass"] == pytest.approx(0.5, abs=1e-12)
    one = jacobian_spectrum("relu", "orthogonal", 1, 2.0, 0.0, num_points=64)
    assert {round(a["at"], 12): round(a["mass"], 12) for a in one.atoms} == {0.0: 0.5, 2.0: 0.5}


def test_orthogonal_one_layer_is_the_law_of_phi_prime_squared():
    cp = critical_point("tanh", 0.05)
    spec = jacobian_spectrum("tanh", "orthogonal", 1, cp.sigma_w2, 0.05)
    rng = np.random.default_rng(0)
    h = math.sqrt(cp.q_star) * rng.standard_normal(400_000)
    sample = cp.sigma_w2 * (1 - np.tanh(h) ** 2) ** 2
    ts = np.quantile(sample, [0.05, 0.25, 0.5, 0.75, 0.95])
    np.testing.assert_allclose(spec.cdf(ts), [0.05, 0.25, 0.5, 0.75, 0.95], atol=4e-3)


@pytest.mark.parametrize("kind", ["smooth", "bernoulli"])
def test_universal_limits(kind):
    u = universal_spectrum(kind, 0.25, num_points=600)
    assert abs(u.integral - 1.0) <= 1e-3
    assert u.density_m1 == pytest.approx(1.0, rel=1e-3)
    assert u.density_m2 == pytest.approx(1.25, rel=1e-3)


def test_deep_orthogonal_erf_approaches_smooth_limit():
    """Orthogonal erf at q* -> 0 with L (mu2/mu1^2 - 1) = 1/4: lambda_max tends to the
    smooth-class edge as L grows."""
    limit = universal_spectrum("smooth", 0.25, num_points=64).lambda_max
    gaps = []
    for depth in (4, 64):
        # mu2/mu1^2 - 1 = 0.25/L for erf: (1+pi q)/sqrt(1+2 pi q) = 1 + 0.25/L
        target = 1 + 0.25 / depth
        q = _solve_q(target)
        law = d2_law("erf", q)
        sw2 = 1 / mu_k("erf", q, 1)
        gaps.append(abs(lambda_max(law, sw2, depth, "orthogonal") - limit))
    assert gaps[1] < 0.5 * gaps[0]


def _solve_q(target: float) -> float:
    from scipy.optimize import brentq

    return brentq(lambda q: (1 + math.pi * q) / math.sqrt(1 + 2 * math.pi * q) - target,
                  1e-12, 10.0, xtol=1e-15)


def test_bad_arguments():
    with pytest.raises(ValueError, match="weights"):
        jacobian_spectrum("relu", "unitary", 2, 2.0, 0.0)
    with pytest.raises(ValueError, match="depth"):
        jacobian_spectrum("relu", "gaussian", 0, 2.0, 0.0)
    with pytest.raises(ValueError, match="grid"):
        jacobian_spectrum("relu", "gaussian", 2, 2.0, 0.0, grid=np.array([2.0, 1.0]))
