"""Free-probability spectrum of ``J J^T`` for a random deep network at its fixed point
(Pennington, Schoenholz, Ganguli 2018).

``J = prod_l D^l W^l``; ``S_{JJ^T} = S_{D^2}^L S_{W^T W}^L`` with
``S_{W^TW}(z) = sigma_w^-2`` (orthogonal, s1 = 0) or ``sigma_w^-2 / (1 + z)`` (Gaussian,
s1 = -1). With ``M(z) = z G(z) - 1`` the master equation is
``M = M_{D^2}(z^{1/L} F(M))``, ``F(x) = S_{W^TW}(x) ((1 + x)/x)^{1 - 1/L}``, solved along
``z = lambda (1 + i eta)`` by root tracking (:mod:`jacspec.theory.solver`);
``rho(lambda) = -Im G / pi``. Moments: ``m1 = chi^L``,
``m2 = chi^{2L} L (mu2/mu1^2 + 1/L - 1 - s1)``. Point masses are reported apart from the
density: at 0 with mass ``P(phi' = 0)`` (rank of J), and for orthogonal weights at
``(sigma_w^2 a)^L`` with mass ``max(0, L p_a - (L - 1))`` for every atom ``a`` of
``phi'^2`` with mass ``p_a`` (the generic intersection of the L flat subspaces).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from jacspec._util.json import jsonable
from jacspec._util.validation import check_choice, positive_int
from jacspec.theory.activations import get_activation
from jacspec.theory.d2law import D2Law, d2_law, m_d2, mu_d2_both, mu_k
from jacspec.theory.meanfield import chi_at, q_star
from jacspec.theory.solver import track

WEIGHTS = ("gaussian", "orthogonal")


def s1_of(weights: str) -> float:
    """First S-transform coefficient of ``W^T W``: -1 Gaussian, 0 orthogonal."""
    return -1.0 if check_choice("weights", weights, WEIGHTS) == "gaussian" else 0.0


def s_transform_weights(z, sigma_w2: float, weights: str):
    """``S_{W^TW}(z)``: ``sigma_w^-2`` (orthogonal) or ``sigma_w^-2 / (1 + z)`` (Gaussian)."""
    check_choice("weights", weights, WEIGHTS)
    z = np.asarray(z)
    if weights == "orthogonal":
        return np.full(z.shape, 1.0 / sigma_w2, dtype=np.result_type(z, float))
    return 1.0 / (sigma_w2 * (1.0 + z))


def m_transform_d2(activation, q: float, w, *, n_cells: int = 160):
    """``M_{D^2}(w) = sum_k mu_k w^-k`` for complex w off the support of phi'^2."""
    return m_d2(d2_law(activation, q, n_cells=n_cells), np.asarray(w, dtype=np.complex128))


def s_transform_d2_bernoulli(z, p: float):
    """``S_{D^2}(z) = (z + 1) / (z + p)`` for ``phi'^2 ~ Bernoulli(p)``."""
    z = np.asarray(z)
    return (z + 1.0) / (z + p)


def jacobian_moments(
    mu1: float, mu2: float, sigma_w2: float, depth: int, weights: str
) -> tuple[float, float]:
    """``(m1, m2)`` of ``JJ^T``: ``m1 = chi^L``, ``m2 = chi^2L L (mu2/mu1^2 + 1/L - 1 - s1)``."""
    chi = sigma_w2 * mu1
    s1 = s1_of(weights)
    m1 = chi**depth
    m2 = chi ** (2 * depth) * depth * (mu2 / mu1**2 + 1.0 / depth - 1.0 - s1)
    return m1, m2


def piecewise_linear_polynomial(z: complex, p: float, sigma_w2: float, depth: int,
                                weights: str) -> np.ndarray:
    """Coefficients (highest power first) of the polynomial in G whose root is G_{JJ^T}(z)
    for ``phi'^2 ~ Bernoulli(p)``: Gaussian ``sigma_w^{2L} G (Gz + p - 1)^L - (Gz - 1)``,
    orthogonal ``sigma_w^{2L} G (Gz + p - 1)^L - (zG)^L (Gz - 1)``."""
    check_choice("weights", weights, WEIGHTS)
    L = int(depth)

    def power(c: np.ndarray, n: int) -> np.ndarray:  # coefficients, lowest power first
        out = np.array([1.0 + 0j])
        for _ in range(n):
            out = np.convolve(out, c)
        return out

    base = np.array([p - 1.0, z], dtype=np.complex128)  # Gz + p - 1
    lhs = sigma_w2**L * np.concatenate([[0.0], power(base, L)])  # times G
    rhs = np.array([-1.0, z], dtype=np.complex128)  # Gz - 1
    if weights == "orthogonal":
        rhs = np.convolve(rhs, np.concatenate([np.zeros(L), [z**L]]))  # times (zG)^L
    n = max(lhs.size, rhs.size)
    poly = np.zeros(n, dtype=np.complex128)
    poly[: lhs.size] += lhs
    poly[: rhs.size] -= rhs
    return poly[::-1]


def _master_residual(law: D2Law, sigma_w2: float, depth: int, weights: str):
    """Residuals of the master equation in two equivalent forms, for the tracked pair
    ``(u, M)`` with ``u = 1 + M = zG``: ``R_M = log(M / M_{D^2}(w))`` (accurate where M
    is small) and ``R_u = log(u / (1 + M_{D^2}(w)))`` (accurate where u is small), with
    ``log w = log z / L - log sigma_w^2 + (1 - 1/L) log(u / M) [- log u, Gaussian]``.
    Returns ``(R_M, dR_M/du, R_u, dR_u/du)``."""
    a = 1.0 - 1.0 / depth
    gauss = weights == "gaussian"
    log_sw = math.log(sigma_w2)

    def res(u: np.ndarray, m: np.ndarray, z: np.ndarray):
        log_u, log_m = np.log(u), np.log(m)
        log_w = np.log(z) / depth - log_sw + a * (log_u - log_m)
        dlog = a * (1.0 / u - 1.0 / m)
        if gauss:
            log_w = log_w - log_u
            dlog = dlog - 1.0 / u
        w = np.exp(log_w)
        mv, uv, dv = mu_d2_both(law, w)
        chain = dv * w * dlog
        return np.log(m / mv), 1.0 / m - chain / mv, np.log(u / uv), 1.0 / u - chain / uv

    return res


def _log_z_of_w(law: D2Law, sigma_w2: float, depth: int, weights: str, w: np.ndarray):
    """``log z`` on the real axis right of the spectrum, parametrised by real w > t_max."""
    with np.errstate(all="ignore"):
        m = np.real(m_d2(law, w.astype(np.complex128)))
    log_z = depth * np.log(w) + (1 - depth) * np.log1p(1.0 / m) + depth * math.log(sigma_w2)
    if weights == "gaussian":
        log_z = log_z + depth * np.log1p(m)
    return log_z


def lambda_max(law: D2Law, sigma_w2: float, depth: int, weights: str) -> float:
    """Right edge of the spectrum of JJ^T: ``min_{M > 0} M^{-1}_{JJ^T}(M)``."""
    check_choice("weights", weights, WEIGHTS)
    t = law.t_max
    s = np.linspace(-40.0, 40.0, 801)
    vals = _log_z_of_w(law, sigma_w2, depth, weights, t + np.exp(s))
    i = int(np.nanargmin(vals))
    lo, hi = s[max(i - 1, 0)], s[min(i + 1, s.size - 1)]
    gr = (math.sqrt(5) - 1) / 2
    for _ in range(80):
        c, d = hi - gr * (hi - lo), lo + gr * (hi - lo)
        fc, fd = _log_z_of_w(law, sigma_w2, depth, weights, t + np.exp(np.array([c, d])))
        if fc < fd:
            hi = d
        else:
            lo = c
    best = min(float(vals[i]), float(_log_z_of_w(
        law, sigma_w2, depth, weights, t + np.exp(np.array([0.5 * (lo + hi)])))[0]))
    return math.exp(best)


def jacobian_atoms(law: D2Law, sigma_w2: float, depth: int, weights: str) -> list[dict]:
    """Point masses of the spectrum of JJ^T as ``[{"at": value, "mass": weight}]``."""
    atoms: dict[float, float] = {}
    for value, mass in law.atoms():
        if value == 0.0:
            atoms[0.0] = atoms.get(0.0, 0.0) + mass
        elif weights == "orthogonal":
            excess = depth * mass - (depth - 1)
            if excess > 1e-9:
                at = (sigma_w2 * value) ** depth
                atoms[at] = atoms.get(at, 0.0) + excess
    return [{"at": float(k), "mass": float(v)} for k, v in sorted(atoms.items()) if v > 1e-9]


def default_grid(lam_max: float, depth: int, num_points: int) -> np.ndarray:
    """Grid for the density: 1/8 of the points log-spaced from
    ``lam_max 10^-min(290, 8 (L+1))`` to ``1e-8 lam_max`` (the singular part near 0 that
    products of many layers develop), 1/8 log-spaced on to ``lam_max / 50``, 1/8
    clustering geometrically onto ``lam_max`` from below (edge singularities), and the
    rest linear up to ``1.05 lam_max``."""
    if num_points < 32:
        raise ValueError(f"num_points={num_points!r} must be at least 32")
    decades = min(290.0, max(12.0, 8.0 * (depth + 1)))
    n_log = num_points // 8
    n_edge = num_points // 8
    mid = lam_max / 50.0
    deep = np.geomspace(lam_max * 10.0**-decades, lam_max * 1e-8, n_log, endpoint=False)
    low = np.geomspace(lam_max * 1e-8, mid, n_log, endpoint=False)
    edge = lam_max * (1.0 - np.geomspace(0.05, 1e-12, n_edge))
    lin = np.linspace(mid, 1.05 * lam_max, num_points - 2 * n_log - n_edge)
    grid = np.unique(np.concatenate([deep, low, edge, lin]))
    return grid


def integrate_moment(grid: np.ndarray, density: np.ndarray, k: int,
                     lam_max: float | None = None) -> float:
    """``int lambda^k rho d lambda``: trapezoid rule in log lambda, except on
    ``[0.9 lam_max, lam_max]`` where it runs in ``s = sqrt(lam_max - lambda)`` (so that
    square-root edges and inverse-square-root edge singularities integrate smoothly)
    and beyond ``lam_max`` (plain trapezoid)."""
    y = grid**k * density
    if lam_max is None:
        return float(np.trapezoid(grid * y, np.log(grid)))
    lo = grid <= 0.9 * lam_max
    top = (grid >= 0.9 * lam_max) & (grid <= lam_max)
    out = float(np.trapezoid(grid[lo] * y[lo], np.log(grid[lo]))) if lo.sum() > 1 else 0.0
    if lo.any() and top.any():  # the gap between the two pieces
        i, j = np.nonzero(lo)[0][-1], np.nonzero(top)[0][0]
        if j > i:
            out += 0.5 * (y[i] + y[j]) * (grid[j] - grid[i])
    if top.sum() > 1:
        sv = np.sqrt(lam_max - grid[top])
        out += float(np.trapezoid(y[top] * 2 * sv, -sv))
    beyond = grid >= lam_max
    if beyond.sum() > 1:
        out += float(np.trapezoid(y[beyond], grid[beyond]))
    return out


class DensityOnGrid:
    """Methods shared by spectra given as a density on ``grid`` plus ``atoms``: ``summary``
    (the scalars named by ``SUMMARY_KEYS`` and the atoms, JSON-able), ``to_dict`` (plus
    ``grid`` and ``density``) and ``to_frame`` (one row per grid point)."""

    SUMMARY_KEYS: ClassVar[tuple[str, ...]] = ()
    grid: np.ndarray
    density: np.ndarray
    atoms: tuple

    def summary(self) -> dict:
        """The scalars of ``SUMMARY_KEYS`` and the atoms (JSON-able)."""
        return jsonable({**{k: getattr(self, k) for k in self.SUMMARY_KEYS},
                         "atoms": [dict(a) for a in self.atoms]})

    def to_dict(self) -> dict:
        """:meth:`summary` plus ``settings``, ``grid`` and ``density``."""
        return {**self.summary(), "settings": jsonable(self.settings),  # type: ignore[attr-defined]
                "grid": jsonable(self.grid), "density": jsonable(self.density)}

    def to_frame(self) -> pd.DataFrame:
        """One row per grid point: columns lambda, density."""
        return pd.DataFrame({"lambda": self.grid, "density": self.density})


@dataclass(frozen=True)
class JacobianSpectrum(DensityOnGrid):
    """Theoretical spectrum of JJ^T: density on ``grid`` plus ``atoms``, moments, edge.

    ``integral``: trapezoid integral of the density (in log lambda); ``mass_below_grid``:
    the mass left of ``grid[0]`` from the local power law there; ``total_mass`` = both
    plus the atoms (1 up to discretisation); ``density_m1/m2``: moments of the numerical
    law (density plus atoms), to compare with the closed forms ``m1``, ``m2``."""

    activation: str
    weights: str
    depth: int
    sigma_w2: float
    sigma_b2: float
    q_star: float
    chi: float
    mu1: float
    mu2: float
    m1: float
    m2: float
    variance: float
    lambda_max: float
    grid: np.ndarray = field(repr=False)
    density: np.ndarray = field(repr=False)
    atoms: tuple = ()
    eta: float = 1e-6
    integral: float = math.nan
    total_mass: float = math.nan
    density_m1: float = math.nan
    density_m2: float = math.nan
    mass_below_grid: float = 0.0
    max_residual: float = 0.0

    def cdf(self, x: np.ndarray) -> np.ndarray:
        """CDF of the theoretical law (density integrated on the grid, plus atoms)."""
        return _cdf(self.grid, self.density, list(self.atoms), np.asarray(x, dtype=float),
                    self.mass_below_grid)

    @property
    def settings(self) -> dict:
        """The network family solved for and the solver's imaginary part ``eta``."""
        keys = ("activation", "weights", "depth", "sigma_w2", "sigma_b2", "eta")
        return {k: getattr(self, k) for k in keys}

    #: summary(): mean field, moments (closed form and numerical), edge, masses (+ atoms).
    SUMMARY_KEYS: ClassVar[tuple[str, ...]] = (
        "activation", "weights", "depth", "sigma_w2", "sigma_b2", "q_star", "chi", "mu1", "mu2",
        "m1", "m2", "variance", "lambda_max", "eta", "integral", "total_mass", "density_m1",
        "density_m2", "mass_below_grid", "max_residual")

    def plot(self, simulation: Any = None, **kwargs: Any) -> Any:
        """Density of log10 lambda, against a :class:`~jacspec.theory.simulate.
        SimulatedSpectrum` when given (:func:`jacspec.report.theory_plots.theory_vs_simulation`)."""
        from jacspec.report.theory_plots import theory_vs_simulation

        return theory_vs_simulation([self], None if simulation is None else [simulation],
                                    **kwargs)


def _cdf(grid, density, atoms, x, below: float) -> np.ndarray:
    lg = np.log(grid)
    y = grid * density
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (y[1:] + y[:-1]) * np.diff(lg))]) + below
    out = np.interp(x, grid, cum, left=0.0, right=cum[-1])
    out = np.where(x < grid[0], below * np.clip(x / grid[0], 0, 1), out)
    for a in atoms:
        out = out + a["mass"] * (x >= a["at"])
    return out


def _validate(depth, sigma_w2, sigma_b2) -> tuple[int, float, float]:
    positive_int("depth", depth)
    for name, v in (("sigma_w2", sigma_w2), ("sigma_b2", sigma_b2)):
        if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{name}={v!r} must be a finite non-negative number")
    if sigma_w2 == 0:
        raise ValueError("sigma_w2=0 gives J = 0; expected sigma_w2 > 0")
    return int(depth), float(sigma_w2), float(sigma_b2)


def solve_density(
    law: D2Law, sigma_w2: float, depth: int, weights: str, grid: np.ndarray, *,
    m1: float, eta: float = 1e-6,
) -> tuple[np.ndarray, list[dict], float]:
    """Density of the continuous part of JJ^T on ``grid`` (atoms subtracted), the atoms,
    and the largest relative residual of the master equation."""
    atoms = jacobian_atoms(law, sigma_w2, depth, weights)
    res = _master_residual(law, sigma_w2, depth, weights)
    z, u, max_res = track(res, grid, m1=m1, eta=eta)
    g = u / z
    for a in atoms:
        g = g - a["mass"] / (z - a["at"])
    dens = np.maximum(-g.imag / math.pi, 0.0)
    dens = np.where(np.isfinite(dens), dens, 0.0)
    return dens, atoms, max_res


def jacobian_spectrum(
    activation,
    weights: str,
    depth: int,
    sigma_w2: float,
    sigma_b2: float,
    *,
    num_points: int = 1000,
    grid: np.ndarray | None = None,
    eta: float = 1e-6,
    q0: float = 1.0,
    n_cells: int = 160,
    refine: bool = True,
) -> JacobianSpectrum:
    """Spectrum of ``JJ^T`` at depth L for an activation at (sigma_w^2, sigma_b^2).

    Finds q* (mean field), builds the law of phi'^2, solves the master equation on
    ``grid`` (default :func:`default_grid`, then up to two passes that add points in
    log-intervals carrying more than ``2 / num_points`` of the mass, when ``refine``) and
    reports density, atoms, m1, m2, variance and lambda_max, plus the density's own mass
    and moments as checks. Orthogonal L = 1 is exact: ``JJ^T = sigma_w^2 D^2``."""
    act = get_activation(activation)
    check_choice("weights", weights, WEIGHTS)
    depth, sigma_w2, sigma_b2 = _validate(depth, sigma_w2, sigma_b2)
    q, _ = q_star(act, sigma_w2, sigma_b2, q0=q0)
    law = d2_law(act, q, n_cells=n_cells)
    mu1, mu2 = mu_k(act, q, 1), mu_k(act, q, 2)
    if mu1 <= 0:
        raise ValueError(f"activation={act.name!r}: phi' vanishes almost surely at q*={q:g}")
    chi = chi_at(act, sigma_w2, q)
    m1, m2 = jacobian_moments(mu1, mu2, sigma_w2, depth, weights)
    lam_max = lambda_max(law, sigma_w2, depth, weights)
    exact = weights == "orthogonal" and depth == 1
    user_grid = grid is not None
    if grid is None:
        grid = default_grid(lam_max, depth, num_points)
        if exact:  # the cell edges of sigma_w^2 phi'^2, approached from both sides
            cont = law.r > 0
            edges = sigma_w2 * np.concatenate([law.m[cont] - law.r[cont],
                                               law.m[cont] + law.r[cont]])
            edges = edges[edges > 0]
            grid = np.unique(np.concatenate([grid, edges * (1 - 1e-12), edges * (1 + 1e-12)]))
    grid = np.asarray(grid, dtype=np.float64)
    if grid.ndim != 1 or grid.size < 2 or np.any(grid <= 0) or np.any(np.diff(grid) <= 0):
        raise ValueError("grid must be an increasing 1-D array of positive values")
    if exact:
        # J J^T = sigma_w^2 D^2: the law of phi'^2, rescaled (no master equation needed)
        dens, atoms, max_res = _orthogonal_one_layer(law, sigma_w2, grid), \
            jacobian_atoms(law, sigma_w2, depth, weights), 0.0
    else:
        dens, atoms, max_res = solve_density(law, sigma_w2, depth, weights, grid, m1=m1,
                                             eta=eta)
        if refine and not user_grid:
            for _ in range(2):
                new = _refinement_points(grid, dens, 2.0 / num_points)
                if new.size == 0:
                    break
                d_new, _, r_new = solve_density(law, sigma_w2, depth, weights, new, m1=m1,
                                                eta=eta)
                grid, order = np.unique(np.concatenate([grid, new]), return_index=True)
                dens = np.concatenate([dens, d_new])[order]
                max_res = max(max_res, r_new)
    below = _mass_below(grid, dens)
    integral = integrate_moment(grid, dens, 0, lam_max)
    atom_mass = sum(a["mass"] for a in atoms)
    dm1 = integrate_moment(grid, dens, 1, lam_max) + sum(a["mass"] * a["at"] for a in atoms)
    dm2 = integrate_moment(grid, dens, 2, lam_max) + sum(a["mass"] * a["at"] ** 2 for a in atoms)
    return JacobianSpectrum(
        activation=act.name, weights=weights, depth=depth, sigma_w2=sigma_w2,
        sigma_b2=sigma_b2, q_star=q, chi=chi, mu1=mu1, mu2=mu2, m1=m1, m2=m2,
        variance=m2 - m1 * m1, lambda_max=lam_max, grid=grid, density=dens,
        atoms=tuple(atoms), eta=eta, integral=integral,
        total_mass=integral + atom_mass + below,
        density_m1=dm1, density_m2=dm2, mass_below_grid=below, max_residual=max_res,
    )


def _orthogonal_one_layer(law: D2Law, sigma_w2: float, grid: np.ndarray) -> np.ndarray:
    """Density of ``sigma_w^2 d``, d from the continuous cells of the law of phi'^2."""
    cont = law.r > 0
    lo = sigma_w2 * (law.m[cont] - law.r[cont])
    hi = sigma_w2 * (law.m[cont] + law.r[cont])
    h = law.p[cont] / (hi - lo)
    inside = (grid[:, None] > lo) & (grid[:, None] < hi)
    return inside.astype(np.float64) @ h


def _refinement_points(grid: np.ndarray, dens: np.ndarray, tol: float) -> np.ndarray:
    """Three log-spaced points inside every interval holding more than ``tol`` mass."""
    lg = np.log(grid)
    y = grid * dens
    mass = 0.5 * (y[1:] + y[:-1]) * np.diff(lg)
    bad = np.nonzero(mass > tol)[0]
    if bad.size == 0:
        return np.zeros(0)
    t = np.array([0.25, 0.5, 0.75])
    pts = np.exp(lg[bad, None] + t[None, :] * (lg[bad + 1] - lg[bad])[:, None]).ravel()
    return np.setdiff1d(pts, grid)


def _mass_below(grid: np.ndarray, dens: np.ndarray) -> float:
    """Mass below the grid from the local power law ``rho ~ lambda^-beta`` at its start."""
    y0, y1 = grid[0] * dens[0], grid[1] * dens[1]
    if y0 <= 0 or y1 <= 0:
        return 0.0
    gamma = math.log(y1 / y0) / math.log(grid[1] / grid[0])  # lambda rho ~ lambda^gamma
    if gamma <= 1e-3:
        return 0.0
    return float(y0 / gamma)
