"""Mean-field signal propagation (Poole et al. 2016, Schoenholz et al. 2017).

Length map ``q' = sigma_w^2 E phi(sqrt(q) z)^2 + sigma_b^2`` with fixed point ``q*``;
``chi = sigma_w^2 E phi'(sqrt(q*) z)^2``; correlation map
``c' = (sigma_w^2 E phi(u1) phi(u2) + sigma_b^2) / q'(q)``, normalised by the length map at
the same q so that ``c' = 1`` at ``c = 1`` exactly, with fixed point ``c*``. Near the critical
line (``chi - 1`` tiny, ``1 - c*`` small) it is evaluated as
``1 - c' = sigma_w^2 E (phi(u1) - phi(u2))^2 / (2 q'(q))``, which has no cancellation; depth
scales ``xi = -1 / log(slope)`` of the length map (xi_q), of the correlation map at c*
(xi_c) and of gradients (``xi_grad = -1 / log chi``, negative when gradients explode).
The critical line ``chi = 1`` is parametrised by q*:
``sigma_w^2(q) = 1 / E phi'(sqrt(q) z)^2``, ``sigma_b^2(q) = q - sigma_w^2(q) E phi^2``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy.optimize import brentq

from jacspec._util.json import jsonable
from jacspec.theory.activations import Activation, get_activation
from jacspec.theory.gauss import composite_nodes, expect

log = logging.getLogger(__name__)

Q_DIVERGED = 1e12


def _check_var(name: str, value: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} must be a finite non-negative number") from None
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{name}={value!r} must be a finite non-negative number")
    return v


def length_map(activation, sigma_w2: float, sigma_b2: float, q: float) -> float:
    """``sigma_w^2 E phi(sqrt(q) z)^2 + sigma_b^2``."""
    act = get_activation(activation)
    return sigma_w2 * expect(act, q, lambda h: act.phi_np(h) ** 2) + sigma_b2


def length_map_slope(activation, sigma_w2: float, q: float) -> float:
    """``dq'/dq = sigma_w^2 E[phi'^2 + phi phi''] = sigma_w^2 E[z phi phi'] / sqrt(q)``
    (Gaussian integration by parts; needs no second derivative)."""
    act = get_activation(activation)
    if q <= 0.0:
        d0 = float(act.dphi_np(np.zeros(1))[0])
        return sigma_w2 * d0 * d0  # phi(0) phi''(0) omitted: exact when phi(0) = 0
    s = math.sqrt(q)
    return sigma_w2 * expect(act, q, lambda h: (h / s) * act.phi_np(h) * act.dphi_np(h)) / s


def chi_at(activation, sigma_w2: float, q: float) -> float:
    """``chi = sigma_w^2 E phi'(sqrt(q) z)^2``."""
    act = get_activation(activation)
    return sigma_w2 * expect(act, q, lambda h: act.dphi_np(h) ** 2)


def q_star(
    activation, sigma_w2: float, sigma_b2: float, *, q0: float = 1.0, tol: float = 1e-13,
    max_iter: int = 10_000,
) -> tuple[float, int]:
    """Fixed point of the length map from ``q0``: plain iteration, then safeguarded
    Newton steps, until ``|q' - q| <= tol * q`` (relative: near the critical line chi and
    c* move with q*, so q* is solved to round-off). Returns ``(q*, iterations)``.
    Where every q is fixed (linear at sigma_w^2 = 1, ReLU at 2, sigma_b = 0) q* = q0."""
    act = get_activation(activation)
    sw2 = _check_var("sigma_w2", sigma_w2)
    sb2 = _check_var("sigma_b2", sigma_b2)
    q = _check_var("q0", q0)
    tol = _check_var("tol", tol)
    for it in range(max_iter):
        fq = length_map(act, sw2, sb2, q)
        r = fq - q
        if abs(r) <= tol * q or r == 0.0:
            return q, it
        if not math.isfinite(fq) or fq > Q_DIVERGED:
            break
        slope = length_map_slope(act, sw2, q)
        if abs(1.0 - slope) < 1e-12 and r > 0:
            break  # q' = q + const: grows without bound
        step = fq
        if it >= 20 and slope < 1.0 - 1e-12:  # Newton only where the map contracts
            qn = q + r / (1.0 - slope)
            if qn >= 0 and abs(length_map(act, sw2, sb2, qn) - qn) < abs(r):
                step = qn
            elif it >= 40 and abs(r) <= 1e3 * tol * q:
                return q, it  # round-off floor of the quadrature: no step improves q
        q = step
    raise ValueError(
        f"sigma_w2={sw2:g}, sigma_b2={sb2:g}: the length map of {act.name} has no finite "
        f"fixed point q* reachable from q0={q0:g} (it diverges or does not converge)"
    )


def _pair_nodes(act: Activation, q: float, eps: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nodes ``u1`` (n, 1), ``u2`` (n, m) and weights (n, m) for ``E f(u1, u2)`` with
    ``u1, u2`` of variance q and correlation ``c = 1 - eps``:
    ``u2 = sqrt(q) ((1 - eps) z1 + sqrt(eps (2 - eps)) z2)`` (no ``1 - c^2`` round-off).
    Where ``phi'`` has kinks, the inner panels of each row are cut where ``u2`` crosses
    them, so every panel integrates a smooth function."""
    s = math.sqrt(q)
    bps = np.asarray(act.breakpoints, dtype=np.float64)
    panel = max(min(0.5, 0.5 / s), 0.01)
    z, w = composite_nodes(bps / s, panel=panel)
    eps = min(max(eps, 0.0), 2.0)
    beta = math.sqrt(eps * (2.0 - eps))
    u1 = s * z[:, None]
    if bps.size == 0 or beta == 0.0:
        u2 = s * ((1.0 - eps) * z[:, None] + beta * z[None, :])
        return u1, u2, w[:, None] * w[None, :]
    rows = [composite_nodes((bps / s - (1.0 - eps) * z1) / beta, panel=panel) for z1 in z]
    m = max(r[0].size for r in rows)
    z2 = np.zeros((z.size, m))
    w2 = np.zeros((z.size, m))
    for i, (zi, wi) in enumerate(rows):
        z2[i, : zi.size], w2[i, : wi.size] = zi, wi
    u2 = s * ((1.0 - eps) * z[:, None] + beta * z2)
    return u1, u2, w[:, None] * w2


def _one_minus_correlation_map(act: Activation, sigma_w2: float, sigma_b2: float, q: float,
                               eps: float) -> float:
    """``1 - c'`` at ``c = 1 - eps``: ``sigma_w^2 E (phi(u1) - phi(u2))^2 / (2 q'(q))``."""
    qn = length_map(act, sigma_w2, sigma_b2, q)
    if q == 0.0 or qn == 0.0 or eps == 0.0:
        return 0.0
    u1, u2, w = _pair_nodes(act, q, eps)
    d = act.phi_np(u1) - act.phi_np(u2)
    return float(sigma_w2 * np.sum(w * d * d) / (2.0 * qn))


def correlation_map(activation, sigma_w2: float, sigma_b2: float, q: float, c: float) -> float:
    """``c' = (sigma_w^2 E phi(u1) phi(u2) + sigma_b^2) / q'(q)`` with corr(u1, u2) = c and
    ``q'(q)`` the length map (so ``c' = 1`` at ``c = 1``), computed as
    ``1 - sigma_w^2 E (phi(u1) - phi(u2))^2 / (2 q'(q))``."""
    act = get_activation(activation)
    if q == 0.0:
        return 1.0
    c = float(np.clip(c, -1.0, 1.0))
    return 1.0 - _one_minus_correlation_map(act, sigma_w2, sigma_b2, q, 1.0 - c)


def correlation_slope(activation, sigma_w2: float, q: float, c: float) -> float:
    """``dc'/dc = sigma_w^2 E phi'(u1) phi'(u2)`` (Price's theorem; at the fixed point q*,
    where ``q'(q*) = q*``)."""
    act = get_activation(activation)
    if q == 0.0:
        d0 = float(act.dphi_np(np.zeros(1))[0])
        return sigma_w2 * d0 * d0
    u1, u2, w = _pair_nodes(act, q, 1.0 - float(np.clip(c, -1.0, 1.0)))
    return float(sigma_w2 * np.sum(w * act.dphi_np(u1) * act.dphi_np(u2)))


CHI_CRITICAL = 1e-12  # chi - 1 below which c* = 1 to the quadrature's precision


def c_star(activation, sigma_w2: float, sigma_b2: float, q: float, chi: float) -> float:
    """Stable fixed point of the correlation map: 1 when chi <= 1 (or chi - 1 <= 1e-12),
    else ``1 - eps*`` with eps* the root on (0, 2] of ``(1 - c'(1 - eps)) / eps - 1``
    (positive near eps = 0, where it tends to chi - 1; chaotic phase)."""
    if chi <= 1.0 + CHI_CRITICAL or q == 0.0:
        return 1.0
    act = get_activation(activation)

    def r(eps: float) -> float:
        return _one_minus_correlation_map(act, sigma_w2, sigma_b2, q, eps) / eps - 1.0

    if r(2.0) >= 0:
        return -1.0
    lo = min(1e-3, 1e-2 * (chi - 1.0))
    while r(lo) <= 0:
        lo *= 1e-2
        if lo < 1e-15:
            return 1.0
    eps = brentq(r, lo, 2.0, xtol=1e-300, rtol=4.0 * np.finfo(float).eps, maxiter=500)
    return float(1.0 - eps)


def _depth(slope: float) -> float:
    """``-1 / log(slope)``: inf at slope 1, negative for growth."""
    if slope <= 0:
        return 0.0
    ls = math.log(slope)
    return math.inf if abs(ls) < 1e-15 else -1.0 / ls


@dataclass(frozen=True)
class MeanField:
    """Mean-field quantities at (sigma_w^2, sigma_b^2) for one activation."""

    activation: str
    sigma_w2: float
    sigma_b2: float
    q_star: float
    chi: float
    c_star: float
    xi_q: float
    xi_c: float
    xi_grad: float
    slope_q: float
    slope_c: float
    q_free: bool
    iterations: int

    @property
    def settings(self) -> dict:
        """The network that was solved for: activation and the two variances."""
        return {"activation": self.activation, "sigma_w2": self.sigma_w2,
                "sigma_b2": self.sigma_b2}

    def summary(self) -> dict:
        """q*, chi, c* and the three depth scales (Inf/NaN -> None)."""
        keys = ("q_star", "chi", "c_star", "xi_q", "xi_c", "xi_grad", "q_free")
        return jsonable({k: getattr(self, k) for k in keys})

    def to_dict(self) -> dict:
        """Every field and ``settings``, JSON-able (an infinite depth scale is written as None)."""
        return jsonable({**asdict(self), "settings": self.settings})

    def to_frame(self) -> pd.DataFrame:
        """One row of every field (floats kept, Inf included)."""
        return pd.DataFrame([asdict(self)])


def mean_field(
    activation, sigma_w2: float, sigma_b2: float, *, q0: float = 1.0, tol: float = 1e-13
) -> MeanField:
    """q*, chi, c*, xi_q, xi_c and xi_grad at (sigma_w^2, sigma_b^2).

    ``tol`` is the relative tolerance of q* (:func:`q_star`). ``xi_c^-1 =
    -log(sigma_w^2 E phi'(u1*) phi'(u2*))`` at c*; where c* = 1 the slope is chi (ordered
    phase) or ``2 - chi`` (chaotic within 1e-12 of the critical line, to first order).
    ``q_free`` is True where the length map is the identity (every q is fixed, as for
    linear at sigma_w^2 = 1 or ReLU at 2 with sigma_b = 0); q* is then ``q0``."""
    act = get_activation(activation)
    q, it = q_star(act, sigma_w2, sigma_b2, q0=q0, tol=tol)
    chi = chi_at(act, sigma_w2, q)
    slope_q = length_map_slope(act, sigma_w2, q)
    q_free = (abs(slope_q - 1.0) < 1e-9
              and abs(length_map(act, sigma_w2, sigma_b2, q0) - q0) < 1e-10 * max(1.0, q0))
    cs = c_star(act, sigma_w2, sigma_b2, q, chi)
    if cs == 1.0:
        slope_c = chi if chi <= 1.0 else 2.0 - chi
    else:
        slope_c = correlation_slope(act, sigma_w2, q, cs)
    return MeanField(
        activation=act.name, sigma_w2=float(sigma_w2), sigma_b2=float(sigma_b2), q_star=q,
        chi=chi, c_star=cs, xi_q=_depth(slope_q), xi_c=_depth(slope_c), xi_grad=_depth(chi),
        slope_q=slope_q, slope_c=slope_c, q_free=q_free, iterations=it,
    )


def critical_weight_variance(activation, q: float) -> tuple[float, float]:
    """The critical line parametrised by q*: ``(sigma_w^2, sigma_b^2)`` with chi = 1 and
    q* = q (sigma_b^2 may come out negative: no such network)."""
    act = get_activation(activation)
    e_d2 = expect(act, q, lambda h: act.dphi_np(h) ** 2)
    if e_d2 <= 0:
        raise ValueError(f"q={q!r}: phi' vanishes almost surely, chi = 1 is unreachable")
    sw2 = 1.0 / e_d2
    sb2 = q - sw2 * expect(act, q, lambda h: act.phi_np(h) ** 2)
    return sw2, sb2


def critical_line(activation, q_values) -> pd.DataFrame:
    """Columns q_star, sigma_w2, sigma_b2 along chi = 1 (rows with sigma_b2 < 0 dropped)."""
    rows = []
    for q in np.asarray(q_values, dtype=np.float64):
        sw2, sb2 = critical_weight_variance(activation, float(q))
        if sb2 >= -1e-12:
            rows.append({"q_star": float(q), "sigma_w2": sw2, "sigma_b2": max(sb2, 0.0)})
    return pd.DataFrame(rows, columns=["q_star", "sigma_w2", "sigma_b2"])


@dataclass(frozen=True)
class CriticalPoint:
    """The point of the critical line chi = 1 at a given sigma_b^2."""

    activation: str
    sigma_b2: float
    sigma_w2: float
    q_star: float
    q_free: bool

    @property
    def settings(self) -> dict:
        """What was solved for: the activation on the critical line at sigma_b^2."""
        return {"activation": self.activation, "sigma_b2": self.sigma_b2}

    def summary(self) -> dict:
        """sigma_w^2 of the critical point, its q* and whether q* is free."""
        return jsonable({k: getattr(self, k) for k in ("sigma_w2", "q_star", "q_free")})

    def to_dict(self) -> dict:
        """Every field and ``settings``, JSON-able."""
        return jsonable({**asdict(self), "settings": self.settings})

    def to_frame(self) -> pd.DataFrame:
        """One row of every field."""
        return pd.DataFrame([asdict(self)])


def critical_point(activation, sigma_b2: float, *, q0: float = 1.0) -> CriticalPoint:
    """sigma_w^2 with chi(sigma_w^2, sigma_b^2) = 1, and its q*.

    Solves ``sigma_b^2(q) = sigma_b^2`` along the q*-parametrised line. Where
    ``sigma_b^2(q)`` vanishes for every q (linear, ReLU: q* is free) the critical point
    exists only at sigma_b^2 = 0 and q* = q0 is reported."""
    act = get_activation(activation)
    sb2 = _check_var("sigma_b2", sigma_b2)
    qs = np.logspace(-8, 3, 89)
    vals = np.array([critical_weight_variance(act, float(q))[1] for q in qs])
    scale = np.maximum(qs, 1.0)
    if np.all(np.abs(vals) <= 1e-9 * scale):
        if sb2 > 1e-12:
            raise ValueError(
                f"sigma_b2={sb2:g}: {act.name} is critical only at sigma_b2 = 0 "
                "(its length map is homogeneous)"
            )
        sw2, _ = critical_weight_variance(act, q0)
        return CriticalPoint(act.name, sb2, sw2, float(q0), True)
    diff = vals - sb2
    idx = np.nonzero(np.sign(diff[:-1]) * np.sign(diff[1:]) <= 0)[0]
    if idx.size == 0:
        if sb2 == 0.0 and abs(float(act.phi_np(np.zeros(1))[0])) == 0.0 and vals[0] >= 0:
            # sigma_b^2(q) -> 0 as q -> 0 when phi(0) = 0: the critical point has q* = 0.
            sw2, _ = critical_weight_variance(act, 0.0)
            return CriticalPoint(act.name, sb2, sw2, 0.0, False)
        raise ValueError(
            f"sigma_b2={sb2:g}: no critical point of {act.name} with q* in [1e-8, 1e3]"
        )
    i = int(idx[0])
    q = brentq(
        lambda t: critical_weight_variance(act, math.exp(t))[1] - sb2,
        math.log(qs[i]), math.log(qs[i + 1]), xtol=1e-14, rtol=1e-14,
    )
    q = math.exp(q)
    sw2, _ = critical_weight_variance(act, q)
    return CriticalPoint(act.name, sb2, sw2, q, False)


def activation_name(activation) -> str:
    """Canonical name of an activation argument."""
    return get_activation(activation).name


__all__ = [
    "Activation", "MeanField", "CriticalPoint", "mean_field", "q_star", "length_map",
    "length_map_slope", "chi_at", "correlation_map", "correlation_slope", "c_star",
    "critical_point", "critical_line", "critical_weight_variance", "chi_grid",
]


def chi_grid(activation, sigma_w2, sigma_b2, *, q0: float = 1.0, iters: int = 200,
             tol: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
    """``(q*, chi)`` on the grid ``sigma_w2[i], sigma_b2[j]`` (shape (len(w), len(b))),
    by vectorised fixed-point iteration of the length map with Newton steps after the
    first ten (NaN where q diverges). Meant for phase diagrams."""
    from jacspec.theory.gauss import composite_nodes

    act = get_activation(activation)
    sw2 = np.broadcast_to(np.asarray(sigma_w2, dtype=np.float64)[:, None],
                          (np.size(sigma_w2), np.size(sigma_b2))).ravel()
    sb2 = np.broadcast_to(np.asarray(sigma_b2, dtype=np.float64)[None, :],
                          (np.size(sigma_w2), np.size(sigma_b2))).ravel()
    z, w = composite_nodes(np.zeros(0), panel=0.5)
    q = np.full(sw2.shape, float(q0))
    active = np.ones(q.shape, dtype=bool)
    for it in range(iters):
        idx = np.nonzero(active)[0]
        if idx.size == 0:
            break
        qa = q[idx]
        sq = np.sqrt(qa)[:, None]
        h = sq * z
        ph = act.phi_np(h)
        fq = sw2[idx] * (ph**2 @ w) + sb2[idx]
        new = fq
        if it >= 10:
            slope = sw2[idx] * ((z * ph * act.dphi_np(h)) @ w) / np.maximum(sq[:, 0], 1e-300)
            with np.errstate(all="ignore"):
                qn = qa + (fq - qa) / (1.0 - slope)
            good = (np.abs(1.0 - slope) > 1e-6) & (qn >= 0) & np.isfinite(qn)
            new = np.where(good, qn, fq)
        bad = ~np.isfinite(new) | (new > Q_DIVERGED)
        conv = np.abs(fq - qa) <= tol * np.maximum(1.0, qa)
        q[idx] = np.where(bad, np.nan, np.where(conv, qa, new))
        active[idx[bad | conv]] = False
    h = np.sqrt(np.nan_to_num(q))[:, None] * z
    chi = sw2 * (act.dphi_np(h) ** 2 @ w)
    chi = np.where(np.isnan(q), np.nan, chi)
    shape = (np.size(sigma_w2), np.size(sigma_b2))
    return q.reshape(shape), chi.reshape(shape)
