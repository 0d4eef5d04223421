"""The two universal limits of JJ^T spectra (Pennington, Schoenholz, Ganguli 2018).

Orthogonal weights at criticality, depth L -> infinity with the variance
``sigma_0^2 = L (mu2/mu1^2 - 1)`` held fixed. Then ``S_{JJ^T}(z) -> exp(-sigma_0^2 z)``
when ``phi'^2`` has a smooth law (erf, tanh at q* -> 0: the smooth class) and
``S_{JJ^T}(z) -> exp(-sigma_0^2 z / (1 + z))`` when ``phi'^2 ~ Bernoulli(p)``, p -> 1
(hard tanh, shifted ReLU: the Bernoulli class). With ``M^{-1}(M) = (1+M)/(M S(M))``:
``z = (1 + M)/M exp(sigma_0^2 M)`` (smooth), ``z = (1 + M)/M exp(sigma_0^2 M/(1 + M))``
(Bernoulli). Both have mean 1 and variance sigma_0^2. The Bernoulli limit keeps the
orthogonal point mass of finite depth, ``L p - (L - 1) -> 1 - sigma_0^2``, at
``sigma_w^{2L} = p^-L -> exp(sigma_0^2)``, where ``M`` has its pole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from jacspec._util.validation import check_choice
from jacspec.theory.freeprob import DensityOnGrid, default_grid, integrate_moment
from jacspec.theory.solver import track

CLASSES = ("smooth", "bernoulli")


def _f(kind: str, m, u):
    """``f(M)`` and ``f'(M)`` of the exponent ``sigma_0^2 f(M)``."""
    if kind == "smooth":
        return m, np.ones_like(m)
    return m / u, 1.0 / (u * u)


def _log_z(kind: str, sigma0_2: float, m: np.ndarray) -> np.ndarray:
    u = 1.0 + m
    return np.log(u / m) + sigma0_2 * _f(kind, m, u)[0]


@dataclass(frozen=True)
class UniversalSpectrum(DensityOnGrid):
    """Limiting density of JJ^T for one universality class and variance sigma_0^2."""

    kind: str
    sigma0_2: float
    lambda_max: float
    grid: np.ndarray = field(repr=False)
    density: np.ndarray = field(repr=False)
    m1: float = 1.0
    m2: float = math.nan
    integral: float = math.nan
    density_m1: float = math.nan
    density_m2: float = math.nan
    atoms: tuple = ()

    @property
    def settings(self) -> dict:
        """The universality class and variance solved for."""
        return {"kind": self.kind, "sigma0_2": self.sigma0_2}

    #: summary(): edge, moments (closed form and numerical), integral (+ atoms).
    SUMMARY_KEYS: ClassVar[tuple[str, ...]] = (
        "kind", "sigma0_2", "lambda_max", "m1", "m2", "integral", "density_m1", "density_m2")


def universal_spectrum(
    kind: str, sigma0_2: float, *, num_points: int = 1000, grid: np.ndarray | None = None,
    eta: float = 1e-6,
) -> UniversalSpectrum:
    """Limiting spectrum of JJ^T (``kind`` "smooth" or "bernoulli", variance sigma_0^2)."""
    check_choice("kind", kind, CLASSES)
    if not isinstance(sigma0_2, (int, float)) or not (0 < sigma0_2 < math.inf):
        raise ValueError(f"sigma0_2={sigma0_2!r} must be a positive finite number")
    s = np.linspace(-30.0, 30.0, 1201)
    vals = _log_z(kind, sigma0_2, np.exp(s))
    i = int(np.argmin(vals))
    lo, hi = s[max(i - 1, 0)], s[min(i + 1, s.size - 1)]
    for _ in range(100):
        c, d = lo + 0.382 * (hi - lo), lo + 0.618 * (hi - lo)
        fc, fd = _log_z(kind, sigma0_2, np.exp(np.array([c, d])))
        if fc < fd:
            hi = d
        else:
            lo = c
    lam_max = math.exp(float(_log_z(kind, sigma0_2, np.exp(np.array([0.5 * (lo + hi)])))[0]))
    if grid is None:
        grid = default_grid(lam_max, 40, num_points)
    grid = np.asarray(grid, dtype=np.float64)

    def res(u, m, z):
        fv, fd = _f(kind, m, u)
        r = np.log(u / m) + sigma0_2 * fv - np.log(z)
        d = 1.0 / u - 1.0 / m + sigma0_2 * fd
        return r, d, r, d

    atoms = []
    if kind == "bernoulli" and sigma0_2 < 1.0:
        atoms.append({"at": math.exp(sigma0_2), "mass": 1.0 - sigma0_2})
    z, u, _ = track(res, grid, m1=1.0, eta=eta)
    g = u / z
    for a in atoms:
        g = g - a["mass"] / (z - a["at"])
    dens = np.maximum(-g.imag / math.pi, 0.0)
    dens = np.where(np.isfinite(dens), dens, 0.0)
    am1 = sum(a["mass"] * a["at"] for a in atoms)
    am2 = sum(a["mass"] * a["at"] ** 2 for a in atoms)
    return UniversalSpectrum(
        kind=kind, sigma0_2=float(sigma0_2), lambda_max=lam_max, grid=grid, density=dens,
        m1=1.0, m2=1.0 + sigma0_2,
        integral=integrate_moment(grid, dens, 0) + sum(a["mass"] for a in atoms),
        density_m1=integrate_moment(grid, dens, 1) + am1,
        density_m2=integrate_moment(grid, dens, 2) + am2,
        atoms=tuple(atoms),
    )
