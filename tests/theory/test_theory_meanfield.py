"""Mean field: q*, chi, c*, depth scales and the critical line against closed forms and
independent quadrature (scipy.integrate.quad)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad
from scipy.optimize import brentq
from scipy.special import erf

from jacspec.theory import (
    ACTIVATIONS,
    chi_at,
    chi_grid,
    correlation_map,
    critical_line,
    critical_point,
    get_activation,
    length_map,
    mean_field,
    mu_k,
)


def _gauss(f, q):
    """E f(sqrt(q) z) by adaptive quadrature, split at 0 and the usual kinks."""
    s = math.sqrt(q)
    pts = [0.0, -1.0 / s, 1.0 / s, -3.0 / s, 3.0 / s, 6.0 / s]
    pts = sorted(p for p in pts if abs(p) < 12)
    val, _ = quad(lambda z: f(s * z) * math.exp(-z * z / 2) / math.sqrt(2 * math.pi),
                  -12, 12, points=pts, limit=400, epsabs=1e-14, epsrel=1e-13)
    return val


def _scalar(act, fn):
    return lambda h: float(fn(np.array([h]))[0])


def test_closed_form_critical_points():
    relu = critical_point("relu", 0.0)
    assert relu.sigma_w2 == pytest.approx(2.0, abs=1e-12)  # (sigma_w, sigma_b) = (sqrt 2, 0)
    lin = critical_point("linear", 0.0)
    assert lin.sigma_w2 == pytest.approx(1.0, abs=1e-12)
    assert mean_field("relu", 2.0, 0.0).chi == pytest.approx(1.0, abs=1e-12)
    assert mean_field("linear", 1.0, 0.0).chi == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="sigma_b2"):
        critical_point("relu", 0.1)


def test_tanh_pennington_point_is_critical():
    mf = mean_field("tanh", 1.05, 2.01e-5)
    assert abs(mf.q_star - 0.0259) < 1e-3
    assert abs(mf.chi - 1.0) < 1e-4
    cp = critical_point("tanh", 2.01e-5)
    assert abs(cp.sigma_w2 - 1.05) < 1e-3 and abs(cp.q_star - 0.0259) < 1e-3


@pytest.mark.parametrize("name,sw2,sb2", [
    ("tanh", 1.7, 0.3), ("hard_tanh", 1.4, 0.1), ("erf", 2.0, 0.05), ("relu", 1.5, 0.2),
    ("selu", 0.9, 0.05), ("gelu", 1.6, 0.1),
])
def test_q_star_and_chi_against_quad(name, sw2, sb2):
    act = get_activation(name)
    phi, dphi = _scalar(act, act.phi_np), _scalar(act, act.dphi_np)
    q_ref = brentq(lambda q: sw2 * _gauss(lambda h: phi(h) ** 2, q) + sb2 - q, 1e-6, 50.0,
                   xtol=1e-14)
    mf = mean_field(name, sw2, sb2)
    assert mf.q_star == pytest.approx(q_ref, rel=1e-8)
    chi_ref = sw2 * _gauss(lambda h: dphi(h) ** 2, q_ref)
    assert mf.chi == pytest.approx(chi_ref, rel=1e-8)
    # xi_q from a central difference of the length map at q*
    h = 1e-5 * q_ref
    slope = (length_map(name, sw2, sb2, q_ref + h) - length_map(name, sw2, sb2, q_ref - h)) / (
        2 * h)
    assert mf.slope_q == pytest.approx(slope, rel=1e-5)
    assert mf.xi_q == pytest.approx(-1.0 / math.log(slope), rel=1e-4)


def test_mu_closed_forms():
    for q in (0.05, 0.7, 3.0):
        # erf(sqrt(pi)/2 h): mu_k = (1 + pi k q)^-1/2
        for k in (1, 2, 3):
            assert mu_k("erf", q, k) == pytest.approx((1 + math.pi * k * q) ** -0.5, rel=1e-10)
        # hard tanh: phi'^2 ~ Bernoulli(erf(1 / sqrt(2 q)))
        p = erf(1 / math.sqrt(2 * q))
        assert mu_k("hard_tanh", q, 1) == pytest.approx(p, rel=1e-10)
        assert mu_k("hard_tanh", q, 2) == pytest.approx(p, rel=1e-10)
        assert mu_k("relu", q, 2) == pytest.approx(0.5, rel=1e-12)


def test_correlation_fixed_point_and_xi_c():
    mf = mean_field("tanh", 2.5, 0.05)  # chaotic: c* < 1
    assert mf.chi > 1 and mf.c_star < 1
    q = mf.q_star
    assert correlation_map("tanh", 2.5, 0.05, q, mf.c_star) == pytest.approx(mf.c_star, abs=1e-8)
    h = 1e-4
    d = (correlation_map("tanh", 2.5, 0.05, q, mf.c_star + h)
         - correlation_map("tanh", 2.5, 0.05, q, mf.c_star - h)) / (2 * h)
    assert mf.slope_c == pytest.approx(d, rel=1e-4)
    ordered = mean_field("tanh", 0.8, 0.05)
    assert ordered.c_star == 1.0 and ordered.xi_c == pytest.approx(-1 / math.log(ordered.chi))


def test_critical_line_parametrisation():
    line = critical_line("tanh", [0.01, 0.1, 1.0])
    for row in line.itertuples():
        mf = mean_field("tanh", row.sigma_w2, row.sigma_b2)
        assert mf.chi == pytest.approx(1.0, abs=1e-7)
        assert mf.q_star == pytest.approx(row.q_star, rel=1e-6)
    cp = critical_point("erf", 0.05)
    assert chi_at("erf", cp.sigma_w2, cp.q_star) == pytest.approx(1.0, abs=1e-9)


def test_callable_activation_uses_autograd():
    mf_named = mean_field("tanh", 1.7, 0.3)
    mf_call = mean_field(lambda h: torch.tanh(h), 1.7, 0.3)
    assert mf_call.q_star == pytest.approx(mf_named.q_star, rel=1e-12)
    assert mf_call.chi == pytest.approx(mf_named.chi, rel=1e-12)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_named_derivatives_match_autograd(name):
    act = get_activation(name)
    h = torch.linspace(-7.3, 7.1, 301, dtype=torch.float64)
    h = h[torch.stack([torch.abs(h - b) > 1e-3 for b in act.breakpoints]).all(0)] \
        if act.breakpoints else h
    x = h.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(act.phi(x).sum(), x)
    assert torch.allclose(act.dphi(h), g, rtol=1e-10, atol=1e-12)


def test_chi_grid_matches_mean_field():
    sw, sb = np.array([0.8, 1.5, 3.0]), np.array([0.0, 0.2])
    q, chi = chi_grid("tanh", sw, sb)
    for i, a in enumerate(sw):
        for j, b in enumerate(sb):
            mf = mean_field("tanh", float(a), float(b))
            assert chi[i, j] == pytest.approx(mf.chi, rel=1e-6, abs=1e-9)


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="activation"):
        mean_field("nope", 1.0, 0.0)
    with pytest.raises(ValueError, match="sigma_w2"):
        mean_field("tanh", -1.0, 0.0)
    with pytest.raises(ValueError, match="sigma_b2"):
        critical_point("tanh", float("nan"))
    with pytest.raises(ValueError, match="fixed point"):
        mean_field("relu", 3.0, 0.1)  # chaotic ReLU: q diverges


# --- near the critical line: an independent Gauss-Hermite reference written here ---------

_GH_Z, _GH_W = np.polynomial.hermite_e.hermegauss(200)
_GH_W = _GH_W / math.sqrt(2 * math.pi)
_REF_PHI = {
    "tanh": (np.tanh, lambda h: 1.0 / np.cosh(h) ** 2),
    "erf": (lambda h: erf(math.sqrt(math.pi) / 2 * h), lambda h: np.exp(-math.pi * h * h / 4)),
}


def _ref_e1(f, q):
    """E f(sqrt(q) z), z ~ N(0, 1), 200-point Gauss-Hermite."""
    return float(np.dot(_GH_W, f(math.sqrt(q) * _GH_Z)))


def _ref_e2(f, g, q, c):
    """E f(u1) g(u2), (u1, u2) centred Gaussian with variance q and correlation c, in the
    symmetric coordinates u1,2 = sqrt(q) (a x +- b y), a^2 - b^2 = c, a^2 + b^2 = 1."""
    a, b = math.sqrt((1 + c) / 2), math.sqrt((1 - c) / 2)
    x, y = _GH_Z[:, None], _GH_Z[None, :]
    s = math.sqrt(q)
    w = _GH_W[:, None] * _GH_W[None, :]
    return float(np.sum(w * f(s * (a * x + b * y)) * g(s * (a * x - b * y))))


def _ref_mean_field(name, sw2, sb2):
    """q*, chi, c* and xi_c from the definitions: q* the root of the length map, c* the
    stable root of g(c) = c' - c with c' = (sigma_w^2 E phi(u1) phi(u2) + sigma_b^2) / q'(q*).

    g is O((chi - 1)(1 - c)) while c' is O(1), so g itself loses the digits of 1 - c* where
    chi - 1 is ~1e-7; the root is found from the same identity written without cancellation,
    ``1 - c' = sigma_w^2 E (phi(u1) - phi(u2))^2 / (2 q'(q*))`` (u1, u2 in symmetric
    coordinates), and checked to be a root of g to round-off."""
    phi, dphi = _REF_PHI[name]

    def qmap(q):
        return sw2 * _ref_e1(lambda h: phi(h) ** 2, q) + sb2

    q = brentq(lambda t: qmap(t) - t, 1e-6, 50.0, xtol=1e-18, rtol=1e-15, maxiter=500)
    chi = sw2 * _ref_e1(lambda h: dphi(h) ** 2, q)
    qn = qmap(q)
    s = math.sqrt(q)
    x, y = _GH_Z[:, None], _GH_Z[None, :]
    w = _GH_W[:, None] * _GH_W[None, :]

    def one_minus_cmap(e):
        a, b = math.sqrt(1 - e / 2), math.sqrt(e / 2)
        d = phi(s * (a * x + b * y)) - phi(s * (a * x - b * y))
        return sw2 * float(np.sum(w * d * d)) / (2 * qn)

    if chi <= 1:
        c = 1.0
    else:
        e = brentq(lambda e: one_minus_cmap(e) / e - 1, 1e-6 * (chi - 1), 2.0, xtol=1e-300,
                   rtol=1e-15, maxiter=500)
        c = 1.0 - e
        g = (sw2 * _ref_e2(phi, phi, q, c) + sb2) / qn - c
        assert abs(g) < 1e-15
    slope = sw2 * _ref_e2(dphi, dphi, q, c)
    return q, chi, c, -1.0 / math.log(slope)


def _ref_critical_sw2(name, q):
    """The critical line at q*: sigma_w^2 = 1 / E phi'^2, sigma_b^2 = q - sigma_w^2 E phi^2."""
    phi, dphi = _REF_PHI[name]
    sw2 = 1.0 / _ref_e1(lambda h: dphi(h) ** 2, q)
    return sw2, q - sw2 * _ref_e1(lambda h: phi(h) ** 2, q)


def _near_critical_points():
    sw2_t, sb2_t = _ref_critical_sw2("tanh", 0.5)
    sw2_e, sb2_e = _ref_critical_sw2("erf", 0.2)
    return [
        ("tanh", 1.05, 2.01e-5),              # Pennington et al.'s point: chi - 1 ~ 2e-7
        ("tanh", sw2_t * (1 + 1e-6), sb2_t),  # just inside the chaotic phase
        ("erf", sw2_e * (1 + 1e-5), sb2_e),
        ("tanh", sw2_t * (1 - 1e-6), sb2_t),  # just inside the ordered phase: c* = 1
        ("tanh", 2.5, 0.05),                  # well inside the chaotic phase
    ]


@pytest.mark.parametrize("name,sw2,sb2", _near_critical_points())
def test_mean_field_near_critical_line_against_gauss_hermite(name, sw2, sb2):
    q_ref, chi_ref, c_ref, xi_ref = _ref_mean_field(name, sw2, sb2)
    mf = mean_field(name, sw2, sb2)
    assert mf.q_star == pytest.approx(q_ref, rel=1e-10)
    assert mf.chi == pytest.approx(chi_ref, rel=1e-12)
    assert mf.chi - 1 == pytest.approx(chi_ref - 1, rel=1e-4)
    if c_ref == 1.0:
        assert mf.c_star == 1.0
    else:
        assert 1 - mf.c_star == pytest.approx(1 - c_ref, rel=1e-4)
    assert mf.xi_c == pytest.approx(xi_ref, rel=1e-4)


def test_tanh_pennington_point_c_star_and_xi_c():
    """The values quoted for (1.05, 2.01e-5): 1 - c* = 1.6e-4 and xi_c = 5.2e6, not the
    1.8e-3 and 2.5e5 that normalising the correlation map by a loose q* gave."""
    mf = mean_field("tanh", 1.05, 2.01e-5)
    assert 1 - mf.c_star == pytest.approx(1.65e-4, rel=0.01)
    assert mf.xi_c == pytest.approx(5.2e6, rel=0.01)
    # the correlation map is normalised by the length map: c = 1 is fixed exactly
    assert correlation_map("tanh", 1.05, 2.01e-5, 0.7 * mf.q_star, 1.0) == 1.0


def _ref_hard_tanh(sw2, sb2):
    """q*, c*, xi_c of hard tanh from one-dimensional integrals: given u1, u2 is Gaussian with
    mean c u1 and variance q (1 - c^2), and E clip(u2) and P(|u2| < 1) have closed forms."""
    def cdf(x):
        return 0.5 * math.erfc(-x / math.sqrt(2))

    def pdf(x):
        return math.exp(-x * x / 2) / math.sqrt(2 * math.pi)

    def e_clip(m, v):
        sd = math.sqrt(v)
        a, b = (-1 - m) / sd, (1 - m) / sd
        return (-cdf(a) + cdf(-b) + m * (cdf(b) - cdf(a)) + sd * (pdf(a) - pdf(b)))

    def clip(h):
        return max(-1.0, min(1.0, h))

    def qmap(q):
        return sw2 * _gauss(lambda h: clip(h) ** 2, q) + sb2

    q = brentq(lambda t: qmap(t) - t, 1e-6, 50.0, xtol=1e-16, rtol=1e-15)
    s = math.sqrt(q)

    def integrate(f):
        pts = [-1 / s, 1 / s]
        val, _ = quad(lambda z: f(z) * math.exp(-z * z / 2) / math.sqrt(2 * math.pi), -12, 12,
                      points=pts, limit=400, epsabs=1e-15, epsrel=1e-13)
        return val

    def g(c):
        v = q * (1 - c * c)
        return (sw2 * integrate(lambda z: clip(s * z) * e_clip(c * s * z, v)) + sb2) / q - c

    c = brentq(g, -0.99, 0.999, xtol=1e-15, rtol=1e-15)
    sd = s * math.sqrt(1 - c * c)
    p = quad(lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)
             * (cdf((1 - c * s * z) / sd) - cdf((-1 - c * s * z) / sd)),
             -1 / s, 1 / s, epsabs=1e-15, epsrel=1e-13)[0]
    return q, c, -1.0 / math.log(sw2 * p)


@pytest.mark.parametrize("sw2,sb2", [(1.4, 0.1), (2.0, 0.05)])
def test_hard_tanh_correlation_fixed_point_against_one_dimensional_integrals(sw2, sb2):
    """phi' of hard tanh jumps: the quadrature must cut at the kinks of u2 too."""
    q_ref, c_ref, xi_ref = _ref_hard_tanh(sw2, sb2)
    mf = mean_field("hard_tanh", sw2, sb2)
    assert mf.q_star == pytest.approx(q_ref, rel=1e-10)
    assert 1 - mf.c_star == pytest.approx(1 - c_ref, rel=1e-6)
    assert mf.xi_c == pytest.approx(xi_ref, rel=1e-6)
