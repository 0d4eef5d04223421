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
