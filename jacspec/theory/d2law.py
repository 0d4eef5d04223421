"""The law of ``D^2 = phi'(h)^2``, h ~ N(0, q*), and its moment generating function.

The law is stored as cells: a uniform density on ``[m - r, m + r]`` carrying mass
``P`` (``r = 0``: an atom). Cells are the images of z-intervals under
``g(z) = phi'(sqrt(q) z)^2``; each keeps its exact Gaussian mass and exact mean, so
``mu_1`` is exact and ``mu_2`` is off by O(width^2). Flat pieces of ``phi'`` (ReLU,
hard tanh, ...) become exact atoms, so Bernoulli laws are represented exactly.

``M_{D^2}(w) = E[d / (w - d)] = sum_cells P (m + w S(x)) / (w - m)`` with
``x = r / (w - m)`` and ``S(x) = artanh(x)/x - 1`` (closed-form Cauchy transform of a
uniform cell; analytic for Im w > 0 and exact up to the real axis).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr, ndtri

from jacspec.theory.activations import Activation, get_activation
from jacspec.theory.gauss import Z_MAX, expect


@dataclass(frozen=True)
class D2Law:
    """Cells (centre ``m``, half-width ``r``, mass ``p``) of the law of phi'(h)^2."""

    m: np.ndarray
    r: np.ndarray
    p: np.ndarray
    q: float

    @property
    def t_max(self) -> float:
        return float(np.max(self.m + self.r))

    def atoms(self) -> list[tuple[float, float]]:
        """``(value, mass)`` of the atoms (zero-width cells), merged by value."""
        sel = self.r == 0
        vals, inv = np.unique(self.m[sel], return_inverse=True)
        masses = np.bincount(inv, weights=self.p[sel])
        return [(float(v), float(w)) for v, w in zip(vals, masses, strict=True)]

    def moment(self, k: int) -> float:
        """``E d^k`` of the cell law (exact for k = 1)."""
        lo, hi = self.m - self.r, self.m + self.r
        with np.errstate(invalid="ignore", divide="ignore"):
            avg = np.where(
                self.r > 0, (hi ** (k + 1) - lo ** (k + 1)) / ((k + 1) * 2 * self.r), self.m**k
            )
        return float(np.dot(self.p, avg))


def _edges(act: Activation, q: float, n_cells: int) -> np.ndarray:
    s = math.sqrt(q)
    n_eq = n_cells // 2
    probs = np.linspace(0.0, 1.0, n_eq + 1)[1:-1]
    eq = ndtri(probs)
    uni = np.linspace(-6.0, 6.0, n_cells - n_eq + 1)
    cuts = [c / s for c in act.breakpoints if abs(c / s) < Z_MAX]
    edges = np.unique(np.concatenate([eq, uni, cuts, [-Z_MAX, 0.0, Z_MAX]]))
    keep = np.concatenate([[True], np.diff(edges) > 1e-9])
    return edges[keep]


def d2_law(activation, q: float, *, n_cells: int = 160) -> D2Law:
    """Cells of the law of ``phi'(sqrt(q) z)^2``, z ~ N(0, 1) (see module docstring)."""
    act = get_activation(activation)
    if q < 0 or not math.isfinite(q):
        raise ValueError(f"q={q!r} must be a finite non-negative variance")
    if q == 0.0:
        d0 = float(act.dphi_np(np.zeros(1))[0]) ** 2
        return D2Law(np.array([d0]), np.zeros(1), np.ones(1), 0.0)
    s = math.sqrt(q)
    z = _edges(act, q, n_cells)
    z0, z1 = z[:-1], z[1:]
    # exact Gaussian mass per cell (upper tail via the complement for accuracy)
    mass = np.where(z0 >= 0, ndtr(-z0) - ndtr(-z1), ndtr(z1) - ndtr(z0))
    x, wgl = np.polynomial.legendre.leggauss(8)
    mid, half = 0.5 * (z0 + z1), 0.5 * (z1 - z0)
    zz = mid[:, None] + half[:, None] * x[None, :]
    dens = np.exp(-0.5 * zz * zz) * wgl[None, :] * half[:, None] / math.sqrt(2 * math.pi)
    g = act.dphi_np(s * zz) ** 2
    quad_mass = dens.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(quad_mass > 0, (dens * g).sum(axis=1) / quad_mass, g[:, 0])
    eps = 1e-9 * (z1 - z0)
    ends = act.dphi_np(s * np.stack([z0 + eps, mid, z1 - eps], axis=1)) ** 2
    lo = np.minimum(ends.min(axis=1), g.min(axis=1))
    hi = np.maximum(ends.max(axis=1), g.max(axis=1))
    r = 0.5 * (hi - lo)
    flat = r <= 1e-14 * np.maximum(1.0, np.abs(hi))
    r = np.where(flat, 0.0, np.minimum(r, mean))  # stay on d >= 0
    mean = np.where(flat, lo, mean)
    # cells beyond ~8 sigma carry < 1e-15 and, where phi'^2 underflows to 0, would pose
    # as a spurious atom at zero: drop them
    keep = mass > 1e-15
    m, r, p = mean[keep], r[keep], mass[keep]
    # merge identical cells (symmetric g gives mirror pairs; flat pieces give atoms)
    key = np.round(np.stack([m, r], axis=1), 13)
    _, inv = np.unique(key, axis=0, return_inverse=True)
    inv = inv.ravel()
    p_u = np.bincount(inv, weights=p)
    m_u = np.bincount(inv, weights=p * m) / p_u
    r_u = np.bincount(inv, weights=p * r) / p_u  # zero only for true flat pieces
    p_u = p_u / p_u.sum()
    return D2Law(m_u, r_u, p_u, float(q))


def _s_series(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``S(x) = artanh(x)/x - 1`` and ``S'(x)`` for complex x (series for |x| < 0.1)."""
    x2 = x * x
    s = x2 * (1 / 3 + x2 * (1 / 5 + x2 * (1 / 7 + x2 * (1 / 9 + x2 * (1 / 11 + x2 / 13)))))
    d = x * (2 / 3 + x2 * (4 / 5 + x2 * (6 / 7 + x2 * (8 / 9 + x2 * (10 / 11 + x2 * 12 / 13)))))
    big = (x.real * x.real + x.imag * x.imag) >= 0.01
    if big.any():
        xb = x[big]
        at = np.arctanh(xb)
        s[big] = at / xb - 1.0
        d[big] = (1.0 / (1.0 - xb * xb) - at / xb) / xb
    return s, d


def _cmatvec(a: np.ndarray, p: np.ndarray) -> np.ndarray:
    """``a @ p`` for complex a and real p (numpy's mixed matmul is slow)."""
    return a.real @ p + 1j * (a.imag @ p)


def m_d2(law: D2Law, w: np.ndarray, derivative: bool = False):
    """``M_{D^2}(w) = sum_k mu_k w^-k = E d/(w - d)`` for complex (or real, > t_max) w;
    with ``derivative=True`` also ``dM/dw``."""
    m_val, _, d_val = mu_d2_both(law, np.asarray(w, dtype=np.complex128))
    return (m_val, d_val) if derivative else m_val


def m_d2_inverse_real(law: D2Law, target: float) -> float:
    """The real ``w > t_max`` with ``M_{D^2}(w) = target > 0`` (bisection in log(w - t_max))."""
    t = law.t_max
    lo, hi = -60.0, 60.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        val = float(np.real(m_d2(law, np.array([t + math.exp(mid)]))[0]))
        if val > target:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-13:
            break
    return t + math.exp(0.5 * (lo + hi))


def mu_k(activation, q: float, k: int) -> float:
    """``mu_k = E phi'(sqrt(q) z)^(2k)`` by Gaussian quadrature."""
    if int(k) != k or k < 0:
        raise ValueError(f"k={k!r} must be a non-negative integer")
    act = get_activation(activation)
    return expect(act, q, lambda h: act.dphi_np(h) ** (2 * int(k)))


def mu_d2_both(law: D2Law, w: np.ndarray):
    """``(M_{D^2}(w), 1 + M_{D^2}(w), dM/dw)``, each summed in its stable form."""
    wc = np.asarray(w, dtype=np.complex128)[..., None]
    inv = 1.0 / (wc - law.m)
    x = law.r * inv
    s, ds = _s_series(x)
    m_val = _cmatvec((law.m + wc * s) * inv, law.p)
    u_val = _cmatvec(wc * (1.0 + s) * inv, law.p)
    d_val = _cmatvec((-(1.0 + s) * law.m - wc * x * ds) * (inv * inv), law.p)
    return m_val, u_val, d_val
