"""``Spectrum``: what an exact and an estimated spectrum both offer.

An :class:`~jacspec.spectra.exact.ESD` (every eigenvalue, from the exact eigensolve) and an
:class:`~jacspec.spectra.estimate.ESDEstimate` (stochastic Lanczos quadrature, or the
exact path seen through the estimate's fields) are both a ``Spectrum``: tables, figures and
the CLI read these members only and never ask which one they got.

Attributes (a field or a property on every implementation):

- ``method``: ``"exact"`` or ``"slq"``; ``n``: data points; ``side``: ``"dual"`` or
  ``"primal"`` (the Gram diagonalised or applied); ``scale``: ``"n"`` (``M/n``) or
  ``"none"`` (``M``);
- ``lambda_max``, ``trace`` of the scaled matrix (exact for an ESD; for SLQ the trace is
  ``||𝒥||_F^2 / c`` computed exactly when 𝒥 was stored, else the Hutchinson estimate, and
  lambda_max the largest Ritz value, a lower bound converging from below);
- ``eigenvalues``: every eigenvalue, descending, or ``None`` when only an estimate exists;
- ``settings``: what produced the spectrum (JSON-able).

Methods: :meth:`Spectrum.measure` (the discrete law behind everything else),
:meth:`Spectrum.cdf`, :meth:`Spectrum.density`, ``metrics()``, ``summary()``,
``to_dict()``, ``to_frame()`` and ``plot()``.

Densities. Both kinds are a discrete law ``mu = sum_j w_j delta(lambda - x_j)`` (an ESD:
its eigenvalues with weight 1/dim; SLQ: Ritz values with averaged Gauss weights), and
``density(grid)`` is its Gaussian broadening ``sum_j w_j N(grid; x_j, sigma^2)`` in lambda.
Atoms at 0 (rank deficiency) spread half their mass below 0, so the density integrates to
1 over ``[min x - 5 sigma, max x + 5 sigma]``, not over ``[0, inf)``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from jacspec.spectra.slq import broaden, discrete_cdf

__all__ = ["DEFAULT_REL_SIGMA", "SPECTRUM_ATTRIBUTES", "Spectrum"]

#: Attributes every :class:`Spectrum` has (fields or properties).
SPECTRUM_ATTRIBUTES = (
    "method",
    "n",
    "side",
    "scale",
    "lambda_max",
    "trace",
    "eigenvalues",
    "settings",
)
#: Default kernel width of :meth:`Spectrum.density`, relative to the spread of the law.
DEFAULT_REL_SIGMA = 0.01


class Spectrum(ABC):
    """The shared interface of exact and estimated spectra (see the module docstring).

    Implementations are frozen dataclasses; they provide :data:`SPECTRUM_ATTRIBUTES`,
    :meth:`measure`, ``metrics``, ``summary``, ``to_dict``, ``to_frame`` and ``plot``.
    """

    method: str
    n: int
    side: str
    scale: str
    lambda_max: float
    trace: float
    eigenvalues: np.ndarray | None
    settings: dict[str, Any]

    @abstractmethod
    def measure(self) -> tuple[np.ndarray, np.ndarray]:
        """The discrete law ``(nodes, weights)`` of the spectrum, weights summing to 1."""

    @abstractmethod
    def metrics(self) -> dict[str, Any]:
        """The columns of :data:`jacspec.spectra.metrics.METRIC_COLUMNS` (NaN where the
        spectrum cannot give them)."""

    @abstractmethod
    def summary(self) -> dict[str, Any]:
        """Headline numbers, JSON-safe; the keys of :meth:`headline` at least."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-safe (through :func:`jacspec._util.json.jsonable`)."""

    @abstractmethod
    def to_frame(self) -> Any:
        """The result's own table (a pandas DataFrame)."""

    @abstractmethod
    def plot(self, **kwargs: Any) -> Any:
        """The spectrum's figure (a matplotlib Figure, from :mod:`jacspec.report`)."""

    def cdf(self, x: np.ndarray | float) -> np.ndarray:
        """``F(x) = mu((-inf, x])``: the fraction of eigenvalues (or of the estimated mass)
        at or below ``x``; nondecreasing, 0 below the spectrum, 1 from lambda_max on (the
        cumulative sum's rounding is clipped to [0, 1])."""
        nodes, weights = self.measure()
        return np.clip(discrete_cdf(nodes, weights, x), 0.0, 1.0)

    def default_sigma(self) -> float:
        """Kernel width of :meth:`density` when none is given:
        ``DEFAULT_REL_SIGMA * (max node - min node)`` (``DEFAULT_REL_SIGMA * |max|`` for a
        single point, 1e-300 for the zero law)."""
        nodes, _ = self.measure()
        span = float(nodes.max() - nodes.min()) if nodes.size else 0.0
        if not span > 0:
            span = abs(float(nodes.max())) if nodes.size else 0.0
        return DEFAULT_REL_SIGMA * span if span > 0 else 1e-300

    def density(self, grid: Any, *, sigma: float | None = None) -> np.ndarray:
        """Gaussian-broadened density of :meth:`measure` on ``grid`` (in lambda):
        ``sum_j w_j exp(-(grid - x_j)^2 / (2 sigma^2)) / (sigma sqrt(2 pi))``, ``sigma``
        defaulting to :meth:`default_sigma`."""
        nodes, weights = self.measure()
        s = self.default_sigma() if sigma is None else float(sigma)
        if not (s > 0 and math.isfinite(s)):
            raise ValueError(f"sigma must be a positive number, got {sigma!r}")
        x = np.asarray(grid, dtype=np.float64)
        return broaden(nodes, weights, x.ravel(), s).reshape(x.shape)

    def density_grid(self, num_points: int = 512, *, sigma: float | None = None) -> np.ndarray:
        """An even grid over the support padded by 5 sigma on each side (where
        :meth:`density` integrates to 1)."""
        nodes, _ = self.measure()
        s = self.default_sigma() if sigma is None else float(sigma)
        return np.linspace(float(nodes.min()) - 5 * s, float(nodes.max()) + 5 * s,
                           int(num_points))

    def headline(self) -> dict[str, Any]:
        """The keys every ``summary()`` starts with: method, n, side, scale, then the
        metrics (trace, lambda_max, stable_rank, ...)."""
        return {"method": self.method, "n": self.n, "side": self.side, "scale": self.scale,
                **self.metrics()}
