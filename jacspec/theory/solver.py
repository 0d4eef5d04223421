"""Root tracking for the master equation from large imaginary part down to the real axis.

The unknown is ``u = z G(z) = 1 + M(z)``, kept as the pair ``(u, M)`` so that whichever
is small keeps full precision. Its physical branch is analytic in the upper half plane
and behaves like ``M = m1 / z`` for large ``|z|``. We follow it by continuation: first
down the imaginary axis (``z = i y``, y from far above the spectrum to the smallest
grid value; sequential, with step halving), then for every grid value lambda at once
along the arc ``z = lambda e^{i theta}``, theta from pi/2 down to ``atan(eta)``.

Newton runs in log coordinates (``log M`` where ``|M| <= |u|``, else ``log u``) on a
residual in log form, ``R = log(M / M_rhs)`` or ``log(u / u_rhs)``; far from the
spectrum this residual is linear in ``log M`` however deep the network, and the
spurious root ``M = 0`` is out of reach.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import numpy as np

log = logging.getLogger(__name__)

AXIS_MAX = 120

# res(u, M, z) -> (R_M, dR_M/du, R_u, dR_u/du)
Residual = Callable[
    [np.ndarray, np.ndarray, np.ndarray],
    tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
]


def _residual(res: Residual, u, m, z):
    r_m, d_m, r_u, d_u = res(u, m, z)
    use_m = np.abs(m) <= np.abs(u)
    r = np.where(use_m, r_m, r_u)
    # derivative with respect to the log of the variable in use
    d = np.where(use_m, d_m * m, d_u * u)
    return r, d, use_m


def _newton(res: Residual, u, m, z, iters: int, tol: float):
    """Masked Newton in log coordinates; returns (u, M, converged mask)."""
    u = np.array(u, dtype=np.complex128)
    m = np.array(m, dtype=np.complex128)
    active = np.ones(u.shape, dtype=bool)
    with np.errstate(all="ignore"):
        for _ in range(iters):
            idx = np.nonzero(active)[0]
            if idx.size == 0:
                break
            r, d, use_m = _residual(res, u[idx], m[idx], z[idx])
            step = -r / d
            bad = ~np.isfinite(step)
            step[bad] = 0.0
            big = np.abs(step) > 1.0
            step[big] /= np.abs(step[big])
            fac = np.exp(step)
            un = np.where(use_m, 1.0 + m[idx] * fac, u[idx] * fac)
            mn = np.where(use_m, m[idx] * fac, u[idx] * fac - 1.0)
            u[idx], m[idx] = un, mn
            done = ((np.abs(step) <= tol) | (np.abs(r) <= 0.1 * tol)) & ~bad
            active[idx[done]] = False
            active[idx[bad]] = False
        r, _, _ = _residual(res, u, m, z)
    ok = np.isfinite(u) & np.isfinite(r) & (np.abs(r) <= 1e3 * tol)
    return u, m, ok


def track(
    res: Residual,
    lam: np.ndarray,
    *,
    m1: float,
    eta: float = 1e-6,
    tol: float = 1e-12,
    rot_steps: int = 8,
) -> tuple[np.ndarray, np.ndarray, float]:
    """``u = zG`` at ``z = lambda e^{i atan(eta)}`` for every lambda > 0 on the physical
    branch. Returns ``(z, u, max_residual)``; points where Newton failed are NaN."""
    lam = np.asarray(lam, dtype=np.float64)
    order = np.argsort(lam)[::-1]
    lam_desc = lam[order]
    # 1) imaginary axis, sequentially, with adaptive halving of the log-step
    ys = _axis_heights(lam_desc, m1)
    axis_u, axis_m = _track_axis(res, ys, m1, tol)
    # 2) rotate every grid point from i*lambda down to lambda*e^{i theta_f}
    start = np.clip(np.searchsorted(-ys, -lam_desc, side="right") - 1, 0, ys.size - 1)
    theta_f = math.atan(eta)
    path = _Arc(res, ys[start], axis_u[start], axis_m[start], lam_desc, theta_f, tol)
    every = np.arange(lam_desc.size)
    u_all, m_all, failed = path.rotate(every, rot_steps, 30, 2)
    if failed.any():
        idx = every[failed]
        log.info("refining %d grid points with finer steps", idx.size)
        u_sub, m_sub, bad = path.rotate(idx, 8 * rot_steps, 60, 16)
        u_sub[bad] = np.nan
        u_all[idx], m_all[idx] = u_sub, m_sub
    z_final = lam_desc * complex(math.cos(theta_f), math.sin(theta_f))
    fin = np.isfinite(u_all)
    max_res = math.inf
    if fin.any():
        r, _, _ = _residual(res, u_all[fin], m_all[fin], z_final[fin])
        max_res = float(np.max(np.abs(r)))
    out_z = np.empty_like(z_final)
    out_u = np.empty_like(u_all)
    out_z[order], out_u[order] = z_final, u_all
    return out_z, out_u, max_res


def _axis_heights(lam_desc: np.ndarray, m1: float) -> np.ndarray:
    """Heights y (descending) of the path z = i y: log-spaced from far above the spectrum
    to its smallest lambda, denser within a decade above and two below the largest."""
    y_start = 1e3 * max(lam_desc[0], 1e-300) + 1e3 * max(m1, 0.0)
    log_hi, log_lo = math.log(y_start), math.log(lam_desc[-1])
    decades = (log_hi - log_lo) / math.log(10.0)
    coarse = np.linspace(log_hi, log_lo, int(min(AXIS_MAX, max(30, decades))))
    # denser near the top of the spectrum, where u changes fastest
    top = math.log(lam_desc[0])
    dense = np.linspace(top + math.log(10.0), max(top - 2 * math.log(10.0), log_lo), 40)
    return np.exp(np.unique(np.concatenate([coarse, dense]))[::-1])


def _track_axis(
    res: Residual, ys: np.ndarray, m1: float, tol: float
) -> tuple[np.ndarray, np.ndarray]:
    """(u, M) at z = i y for every height, sequentially from M = m1 / z at the top, halving
    the log-step (up to 4096 sub-steps) where a step's root moves too far; NaN below a
    height where tracking failed."""
    n_axis = ys.size
    z0 = np.array([1j * ys[0]])
    m0 = np.array([m1 / z0[0]])
    u_cur, m_cur, ok = _newton(res, 1.0 + m0, m0, z0, 80, tol)
    if not ok[0]:
        raise RuntimeError("master equation: no solution far from the spectrum")
    axis_u = np.empty(n_axis, dtype=np.complex128)
    axis_m = np.empty(n_axis, dtype=np.complex128)
    axis_u[0], axis_m[0] = u_cur[0], m_cur[0]
    for k in range(1, n_axis):
        y0, target = ys[k - 1], ys[k]
        y, sub = y0, 1
        while y > target * (1 + 1e-12):
            y_next = max(target, y * (target / y0) ** (1.0 / sub))
            u_try, m_try, ok = _newton(res, u_cur, m_cur, np.array([1j * y_next]), 40, tol)
            # accept only small moves of the root: large ones may jump branches
            small = (abs(np.log(m_try[0] / m_cur[0])) <= 0.25
                     and abs(np.log(u_try[0] / u_cur[0])) <= 0.25)
            if ok[0] and small and m_try[0].imag <= 1e-12 * abs(m_try[0]):
                u_cur, m_cur, y = u_try, m_try, y_next
            else:
                sub *= 2
                if sub > 4096:
                    break
        if sub > 4096:
            log.warning("master equation: tracking failed below z = %gi", y)
            axis_u[k:], axis_m[k:] = np.nan, np.nan
            break
        axis_u[k], axis_m[k] = u_cur[0], m_cur[0]
    return axis_u, axis_m


class _Arc:
    """The second leg of the path for each grid point: from its start i y0 on the axis
    radially down to i lambda, then along z = lambda e^{i theta}, theta from pi/2 to
    ``theta_f``; a Newton step whose root jumps (|log ratio| > 2) is refused."""

    def __init__(self, res: Residual, y0: np.ndarray, u0: np.ndarray, m0: np.ndarray,
                 lam_desc: np.ndarray, theta_f: float, tol: float) -> None:
        self.res, self.y0, self.u0, self.m0 = res, y0, u0, m0
        self.lam_desc, self.theta_f, self.tol = lam_desc, theta_f, tol

    def _step(self, z, u, m, iters: int):
        un, mn, ok = _newton(self.res, u, m, z, iters, self.tol)
        with np.errstate(all="ignore"):
            jump = (np.abs(np.log(mn / m)) > 2.0) | (np.abs(np.log(un / u)) > 2.0)
        ok &= ~jump
        return np.where(ok, un, u), np.where(ok, mn, m), ok

    def rotate(self, sel: np.ndarray, steps: int, iters: int, radial: int):
        """(u, M, failed) at the end of the path for the points ``sel``: ``radial`` steps
        down the axis, then ``steps`` angles, ``iters`` Newton iterations each."""
        u, m = self.u0[sel], self.m0[sel]
        y0, lam = self.y0[sel], self.lam_desc[sel]
        fail = np.zeros(sel.size, dtype=bool)
        for k in range(1, radial + 1):
            u, m, ok = self._step(1j * y0 * (lam / y0) ** (k / radial), u, m, iters)
            fail |= ~ok
        ratio = self.theta_f / (math.pi / 2)
        thetas = (math.pi / 2) * ratio ** (np.arange(1, steps + 1) / steps)
        for th in thetas:
            u, m, ok = self._step(lam * complex(math.cos(th), math.sin(th)), u, m, iters)
            fail |= ~ok
        return u, m, fail
