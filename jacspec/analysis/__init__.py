"""One call, one tidy table: the Jacobian ESD of a model on data, with heavy-tail metrics.

``analyze(model, data)`` computes the ESD of ``M/n`` for the input-output data Jacobian
(and, with ``layers=``, for each hidden layer's two Jacobians: input -> layer and
layer -> output), then for every matrix one row of metrics with WeightWatcher's names:

- spectral: num_evals, rank, trace, lambda_max, stable_rank, log_norm, log_spectral_norm,
  entropy, effective_rank (:mod:`jacspec.esd`);
- power law on the eigenvalues above the numerical-rank tolerance: alpha, xmin, xmax, D,
  sigma, num_pl_spikes, alpha_weighted = alpha log10 lambda_max, log_alpha_norm =
  log10 sum lambda^alpha, warning (:mod:`jacspec.heavytail.powerlaw`);
- Marchenko-Pastur bulk fit with Q = n / cols (cols = kd, or (k-1)d for softmax rows, which
  sum to zero over classes): num_spikes, mp_softrank, lambda_plus, mp_sigma2
  (:mod:`jacspec.heavytail.nulls`); NaN, with the warning "no MP bulk above the rank
  tolerance (R of M eigenvalues above tol)", when at most half of the min(n, cols)
  eigenvalues (or fewer than 3) are above ``tol``;
- randomized null (entries of 𝒥 shuffled with ``seed``, when 𝒥 fits in
  ``randomize_max_bytes``), WeightWatcher's columns: rand_distance (Jensen-Shannon distance
  of the sorted, normalised eigenvalue vectors), rand_lambda_max, num_traps (MP spikes
  of the randomized ESD); jacspec's: num_above_rand_max, rand_hist_jsd
  (:mod:`jacspec.heavytail.nulls`);
- precision: ``tol`` (the rank rule of :func:`jacspec.spectra.eigen.rank_tolerance`) and
  ``unresolved`` (quantities a float32 Jacobian could not resolve, "" if none; rerun with
  ``dtype=torch.float64`` to resolve them; the MP columns are named when ``rank`` is and
  the fit took eigenvalues below ``tol`` as zeros).
- sketch: ``sketch_r`` (0: exact) and the error bars of lambda_max and the trace,
  ``lambda_max_se``, ``lambda_max_low``, ``lambda_max_high``, ``trace_se``, ``trace_low``,
  ``trace_high``: for a ``method="sketched"`` row the delete-one-group jackknife of
  :func:`jacspec.jacobian.sketch.sketch_error_bars` (standard error, and the 95% band, which
  holds the row's value); zero width for an exact row; NaN for an estimated or skipped row.

Every row has every column of :data:`~jacspec.analysis.columns.ROW_METRICS` (NaN where it
was not computed) and of :data:`~jacspec.analysis.columns.ROW_INFO` (declared in
:mod:`jacspec.analysis.columns`); the :class:`~jacspec.track.tracker.Tracker` records any of
the former.

Eigenvalues at or below ``tol`` are zeros for every fit (power law, MP, the null's MP fit),
so ``num_spikes <= rank`` and the direct and factored routes give the same columns. The
power law is fitted to the eigenvalues above ``tol``; the MP bulk to all min(n, cols)
eigenvalues (zeros included; structural softmax zeros left out). ``warning``: jacspec's own
warnings, joined by "; " ("no power-law fit: ...", "no MP bulk above the rank tolerance
(...)", "float32 could not resolve ...", "skipped: ...", "estimated density"); no
WeightWatcher "over-trained"/"under-trained" label (alpha thresholds calibrated on weight
matrices, not on Jacobian ESDs).

The room: :mod:`~jacspec.analysis.driver` (:func:`analyze`, a short driver), :mod:`.settings`
(analyze's arguments checked and resolved once, the settings recorded), :mod:`.plan` (every
row planned, and its route, before any Jacobian), :mod:`.rows` (one function per planned
row: exact, estimated, skipped), :mod:`.matrix` (an exact matrix's columns),
:mod:`.sketched` (a sketched row's options and error bars), :mod:`.result`
(:class:`Analysis`), :mod:`.columns` (the table's columns, declared once; no torch import).
The names below are imported on first use, so ``jacspec.analysis.columns`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: Each public name of the room and the module defining it (imported on first use).
_EXPORTS: dict[str, str] = {
    "analyze": "jacspec.analysis.driver",
    "check_fit_kwargs": "jacspec.analysis.driver",
    "Analysis": "jacspec.analysis.result",
    "heavy_tail_columns": "jacspec.analysis.matrix",
    "RowPlan": "jacspec.analysis.plan",
    "plan_rows": "jacspec.analysis.plan",
    "METHODS": "jacspec.analysis.settings",
    "RANDOMIZE_MAX_BYTES": "jacspec.analysis.settings",
    "MAIN": "jacspec._util.names",
    "ROW_METRICS": "jacspec.analysis.columns",
    "ROW_INFO": "jacspec.analysis.columns",
    "SKETCHED": "jacspec.analysis.columns",
    "SKETCH_COLUMNS": "jacspec.analysis.columns",
    "POWERLAW_COLUMNS": "jacspec.analysis.columns",
    "MP_COLUMNS": "jacspec.analysis.columns",
    "NULL_COLUMNS": "jacspec.analysis.columns",
}

__all__ = ["MAIN", "METHODS", "MP_COLUMNS", "NULL_COLUMNS", "POWERLAW_COLUMNS",
           "RANDOMIZE_MAX_BYTES", "ROW_INFO", "ROW_METRICS", "SKETCHED", "SKETCH_COLUMNS",
           "Analysis", "RowPlan", "analyze", "check_fit_kwargs", "heavy_tail_columns",
           "plan_rows"]


def __getattr__(name: str) -> Any:
    """Import a public name of the room on first use (PEP 562)."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'jacspec.analysis' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs (re-exported lazily)
    from jacspec._util.names import MAIN
    from jacspec.analysis.columns import (
        MP_COLUMNS,
        NULL_COLUMNS,
        POWERLAW_COLUMNS,
        ROW_INFO,
        ROW_METRICS,
        SKETCH_COLUMNS,
        SKETCHED,
    )
    from jacspec.analysis.driver import analyze, check_fit_kwargs
    from jacspec.analysis.matrix import heavy_tail_columns
    from jacspec.analysis.plan import RowPlan, plan_rows
    from jacspec.analysis.result import Analysis
    from jacspec.analysis.settings import METHODS, RANDOMIZE_MAX_BYTES
