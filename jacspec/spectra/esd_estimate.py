"""The estimate-shaped spectrum: :class:`ESDEstimate`, what
:func:`jacspec.spectra.estimate.estimate_esd` returns (exact or SLQ), and
:func:`estimate_from_esd` (an exact ESD in those fields).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from jacspec._util.json import jsonable
from jacspec.spectra.exact import ESD
from jacspec.spectra.metrics import estimated_metrics, spectral_metrics
from jacspec.spectra.options import DensityOptions, resolve_density_options
from jacspec.spectra.slq import spectral_density
from jacspec.spectra.spectrum import Spectrum

__all__ = ["ESDEstimate", "estimate_from_esd"]


@dataclass(frozen=True)
class ESDEstimate(Spectrum):
    """Spectral density of M/c (c = n or 1) on one Gram side, exact or estimated: a
    :class:`~jacspec.spectra.spectrum.Spectrum`.

    ``grid``/``grid_density``: the Gaussian-broadened density computed with the estimate
    (:func:`jacspec.spectra.slq.spectral_density`; in log10 λ when
    ``params["log_scale"]``); :meth:`density` evaluates the broadening in λ on any grid.
    ``nodes``/``weights``: the discrete measure behind it (exact: all eigenvalues, weight
    1/dim; SLQ: Ritz values and Gauss weights averaged over start vectors); ``trace``: exact
    tr = ||𝒥||_F^2/c when known (else the SLQ/Hutchinson estimate); ``trace_estimate`` and
    ``trace_stderr`` the stochastic one; ``top_eigenvalues`` descending; ``zero_mass`` the
    weight at 0 (nodes <= zero_tol * lambda_max). ``params`` records every setting; for SLQ
    ``params["resolution"]`` = λ_max π²/(16 m²), the Gauss-node spacing next to 0 with m
    steps: the estimate lumps together eigenvalues below that scale.

    Metrics (:meth:`metrics`): the exact path gives every column of
    :func:`jacspec.spectra.metrics.spectral_metrics`; SLQ gives trace, lambda_max and what is
    made of them (stable_rank, log_norm, log_spectral_norm) and NaN for rank, entropy and
    effective_rank (:func:`jacspec.spectra.metrics.estimated_metrics`).
    """

    grid: np.ndarray
    grid_density: np.ndarray
    nodes: np.ndarray
    weights: np.ndarray
    trace: float
    trace_estimate: float
    trace_stderr: float
    top_eigenvalues: np.ndarray
    top_residuals: np.ndarray
    lambda_max: float
    zero_mass: float
    method: str
    side: str
    dim: int
    n: int
    kd: int
    scale: str
    output: str | None
    storage: str | None
    seconds: float
    reason: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def eigenvalues(self) -> np.ndarray | None:
        """Every eigenvalue, descending, on the exact path; None for an SLQ estimate."""
        return self.nodes.copy() if self.method == "exact" else None

    @property
    def settings(self) -> dict[str, Any]:
        """What produced the estimate: method, side, scale, output, storage, why, params."""
        return {"method": self.method, "side": self.side, "scale": self.scale,
                "output": self.output, "storage": self.storage, "reason": self.reason,
                **self.params}

    def measure(self) -> tuple[np.ndarray, np.ndarray]:
        """The discrete measure ``(nodes, weights)``."""
        return self.nodes, self.weights

    def default_sigma(self) -> float:
        """The estimate's own kernel width when its density is in λ (so that
        ``density(grid) == grid_density``), else :meth:`Spectrum.default_sigma`."""
        sigma = self.params.get("sigma")
        if sigma is not None and not self.params.get("log_scale", False):
            return float(sigma)
        return super().default_sigma()

    def metrics(self) -> dict[str, Any]:
        """Exact: :func:`~jacspec.spectra.metrics.spectral_metrics` of the eigenvalues (with
        the rank rule's rank); SLQ: :func:`~jacspec.spectra.metrics.estimated_metrics`."""
        if self.method == "exact":
            return spectral_metrics(self.nodes, rank=self.params.get("rank"))
        return estimated_metrics(self.trace, self.lambda_max, self.dim)

    def summary(self) -> dict[str, Any]:
        """Scalars only (no arrays): :meth:`Spectrum.headline`, the estimate's own numbers
        and ``params``."""
        keys = ("trace", "trace_estimate", "trace_stderr", "lambda_max", "zero_mass", "method",
                "side", "dim", "n", "kd", "scale", "output", "storage", "seconds", "reason")
        return jsonable(self.headline() | {k: getattr(self, k) for k in keys}
                        | {"params": self.params})

    def to_dict(self) -> dict[str, Any]:
        return jsonable(asdict(self))

    def to_frame(self) -> Any:
        """The density computed with the estimate: columns ``x`` (= ``grid``), ``density``."""
        import pandas as pd

        return pd.DataFrame({"x": self.grid, "density": self.grid_density})

    def plot(self, **kwargs: Any) -> Any:
        """CDF and density of the estimate
        (:func:`jacspec.report.esd_plots.plot_esd_estimate`; ``kwargs`` go there)."""
        from jacspec.report.esd_plots import plot_esd_estimate

        return plot_esd_estimate(self, **kwargs)


def estimate_from_esd(
    e: ESD,
    *,
    top_k: int = 10,
    reason: str = "",
    density_options: DensityOptions | None = None,
    **fields: Any,
) -> ESDEstimate:
    """An exact :class:`~jacspec.spectra.exact.ESD` in the estimate's fields: nodes = every
    eigenvalue (weight 1/dim), exact trace and top-k (zero residuals), and the broadened
    density on a grid (:func:`jacspec.spectra.slq.spectral_density`; ``density_options``, a
    :class:`~jacspec.spectra.options.DensityOptions`, or its fields as keywords)."""
    do = resolve_density_options(density_options, **fields)
    ev = np.asarray(e.eigenvalues, dtype=np.float64)
    dens = spectral_density(ev, None, method="exact", density_options=do)
    tr = float(ev.sum())
    kk = min(top_k, ev.size)
    return ESDEstimate(
        grid=dens.grid,
        grid_density=dens.density,
        nodes=ev,
        weights=np.full(ev.size, 1.0 / ev.size),
        trace=tr,
        trace_estimate=tr,
        trace_stderr=0.0,
        top_eigenvalues=ev[:kk].copy(),
        top_residuals=np.zeros(kk),
        lambda_max=float(ev[0]),
        zero_mass=dens.zero_mass,
        method="exact",
        side=e.side,
        dim=ev.size,
        n=e.n,
        kd=e.k * e.d,
        scale=e.scale,
        output=e.output,
        storage=None,
        seconds=0.0,
        reason=reason,
        params={"eigensolver": "syevd (float64)", "rank": e.rank, "tol": e.tol,
                "dtype": e.dtype, "sigma": dens.sigma, "log_scale": do.log_scale,
                "zero_tol": do.zero_tol},
    )
