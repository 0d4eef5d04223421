"""Metrics of an empirical spectral density, named as WeightWatcher names them.

For eigenvalues ``lambda_1 >= ... >= 0`` (of ``M/n`` or ``M``):

- ``trace = sum lambda``; ``lambda_max``; ``stable_rank = trace / lambda_max``
- ``log_norm = log10 trace``; ``log_spectral_norm = log10 lambda_max``
- ``entropy = -sum p ln p / ln R`` with ``p = lambda / trace`` and ``R`` the numerical rank
  (WeightWatcher's normalised matrix entropy, in [0, 1])
- ``effective_rank = trace^2 / sum lambda^2`` (participation ratio)

Heavy-tail fits (alpha, xmin, ...) are added by :mod:`jacspec.heavytail.columns`.

An estimated spectrum (stochastic Lanczos quadrature) knows ``trace`` and ``lambda_max``
only, so :func:`estimated_metrics` gives those and the metrics made of them (stable_rank,
log_norm, log_spectral_norm) and NaN for rank, entropy and effective_rank, which need every
eigenvalue (the quadrature's nodes lump the small ones together).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

#: Column order of the first metric table.
METRIC_COLUMNS = (
    "num_evals",
    "rank",
    "trace",
    "lambda_max",
    "stable_rank",
    "log_norm",
    "log_spectral_norm",
    "entropy",
    "effective_rank",
)


def _as_eigenvalues(eigenvalues: Any) -> np.ndarray:
    vals = np.asarray(eigenvalues, dtype=np.float64).ravel()
    if vals.size == 0:
        raise ValueError("eigenvalues is empty; expected at least one eigenvalue")
    if not np.isfinite(vals).all():
        raise ValueError("eigenvalues contain NaN or Inf")
    return vals


def spectral_metrics(eigenvalues: Any, *, rank: int | None = None) -> dict[str, Any]:
    """The first metric table for an ESD (see the module docstring for the formulas).

    ``rank`` defaults to the count of eigenvalues above ``lambda_max * len * eps64``.
    """
    vals = np.clip(_as_eigenvalues(eigenvalues), 0.0, None)
    lam_max = float(vals.max())
    trace = float(vals.sum())
    if rank is None:
        rank = int((vals > lam_max * vals.size * np.finfo(np.float64).eps).sum())
    out: dict[str, Any] = {"num_evals": int(vals.size), "rank": int(rank)}
    if trace <= 0.0:
        out.update(
            trace=0.0,
            lambda_max=0.0,
            stable_rank=float("nan"),
            log_norm=float("-inf"),
            log_spectral_norm=float("-inf"),
            entropy=float("nan"),
            effective_rank=float("nan"),
        )
        return out
    p = vals[vals > 0] / trace
    ent = float(-(p * np.log(p)).sum())
    out.update(
        trace=trace,
        lambda_max=lam_max,
        stable_rank=trace / lam_max,
        log_norm=float(np.log10(trace)),
        log_spectral_norm=float(np.log10(lam_max)),
        entropy=float(ent / np.log(rank)) if rank > 1 else 0.0,
        effective_rank=trace**2 / float((vals**2).sum()),
    )
    return out


def estimated_metrics(trace: float, lambda_max: float, num_evals: int) -> dict[str, Any]:
    """The metric table from ``trace`` and ``lambda_max`` alone (the columns of
    :data:`METRIC_COLUMNS`; rank, entropy and effective_rank are NaN)."""
    trace, lam = float(trace), float(lambda_max)
    nan = float("nan")
    out: dict[str, Any] = {"num_evals": int(num_evals), "rank": nan}
    if not (trace > 0 and lam > 0):
        out.update(trace=max(trace, 0.0) if math.isfinite(trace) else nan,
                   lambda_max=max(lam, 0.0) if math.isfinite(lam) else nan, stable_rank=nan,
                   log_norm=float("-inf") if trace == 0 else nan,
                   log_spectral_norm=float("-inf") if lam == 0 else nan)
    else:
        out.update(trace=trace, lambda_max=lam, stable_rank=trace / lam,
                   log_norm=math.log10(trace), log_spectral_norm=math.log10(lam))
    out.update(entropy=nan, effective_rank=nan)
    return {c: out[c] for c in METRIC_COLUMNS}


def metrics_table(esds: dict[str, Any]) -> pd.DataFrame:
    """One row per named ESD (an :class:`~jacspec.spectra.exact.ESD` or an eigenvalue array)."""
    rows = []
    for name, item in esds.items():
        metrics = item.metrics() if hasattr(item, "metrics") else spectral_metrics(item)
        rows.append({"name": name, **metrics})
    return pd.DataFrame(rows).set_index("name")
