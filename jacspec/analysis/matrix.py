"""One exact row of :func:`jacspec.analyze`: the Gram of a matrix's rows, its ESD and every column.

The spectral columns (:func:`jacspec.spectra.metrics.spectral_metrics`), the power-law, MP
and randomized-null columns (:func:`heavy_tail_columns`), the rank tolerance and what float32
left unresolved, and the error bars (zero width when exact; the jackknife when sketched,
:mod:`jacspec.analysis.sketched`).
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any

import numpy as np

from jacspec.analysis.sketched import sketch_columns
from jacspec.heavytail.columns import MP_COLUMNS, NULL_COLUMNS, heavy_tail_metrics
from jacspec.heavytail.powerlaw import PowerLawFit, fit_powerlaw
from jacspec.heavytail.randomized import RandomizedNull, randomized_null
from jacspec.jacobian.source import JacobianSource
from jacspec.spectra.exact import ESD, esd_from_gram
from jacspec.spectra.gram import gram_from_source
from jacspec.spectra.metrics import spectral_metrics

logger = logging.getLogger(__name__)

__all__ = ["analyse_matrix", "exact_error_bars", "heavy_tail_columns"]


def heavy_tail_columns(
    eigenvalues: np.ndarray,
    *,
    rank: int,
    n: int,
    cols: int,
    null: RandomizedNull | None = None,
    tol: float | None = None,
    **fit_kwargs: Any,
) -> tuple[dict[str, Any], PowerLawFit | None]:
    """Power-law, MP and null columns for one ESD (eigenvalues descending, ``rank`` above tol).

    Eigenvalues <= ``tol`` (the ESD's rank tolerance) are zeros for every fit. The power law
    is fitted to the ``rank`` eigenvalues above it; the MP bulk to all ``min(n, cols)``
    eigenvalues (the ESD's tail beyond them holds the structural zeros of softmax rows),
    those below tol as zeros. A power-law fit that cannot be made gives NaN columns and the
    warning "no power-law fit: ..."; no bulk above tol gives NaN MP columns and the warning
    "no MP bulk above the rank tolerance (R of M eigenvalues above tol)".
    """
    from jacspec.spectra.eigen import zero_below_tolerance

    every, tol = zero_below_tolerance(eigenvalues, tol)
    vals = every[: max(rank, 1)]
    fit: PowerLawFit | None = None
    why = ""
    try:
        fit = fit_powerlaw(vals, **fit_kwargs)
    except ValueError as exc:
        why = str(exc)
    row = heavy_tail_metrics(
        every[: min(n, cols)], fit=fit, null=null, Q=n / cols, rows=n, tol=tol, errors="nan",
        **({} if fit is not None else fit_kwargs),
    )
    if fit is None and why:  # say why instead of a bare "failed" (e.g. a rank-1 layer row)
        row["warning"] = row["warning"].replace("failed", f"no power-law fit: {why}", 1)
    return row, fit


def analyse_matrix(
    name: str,
    source: JacobianSource,
    *,
    scale: str,
    side: str,
    max_memory: int | None,
    randomize: bool,
    randomize_max_bytes: int,
    seed: int,
    fit_kwargs: dict[str, Any],
    deflate: bool = True,
) -> tuple[dict[str, Any], ESD, PowerLawFit | None, RandomizedNull | None]:
    """One exact row: the Gram of ``source`` (cached in float64 up to ``randomize_max_bytes``
    when the randomized null needs the entries of 𝒥), its ESD and every column."""
    explicit = source.options is not None and source.options.route != "auto"
    if randomize and source.route != "direct" and not explicit:  # auto: 𝒥 did not fit
        logger.warning("%s: randomized null skipped: 𝒥 exceeds randomize_max_bytes", name)
    elif randomize and source.route != "direct":
        warnings.warn(
            f"analyze: randomized null skipped for {name}: route={source.route!r} rows are not "
            "the entries of 𝒥 (the null shuffles them); pass route='direct' for the null",
            UserWarning, stacklevel=4,  # the user's call of analyze
        )
    sketched = source.info.get("sketch")
    # the null shuffles the entries of 𝒥, which sketched rows are not (said in the sketch's line)
    direct = randomize and source.route == "direct" and not sketched
    # a sketch's error bars read its rows again: held once (up to randomize_max_bytes)
    cached = source.cached(max_bytes=randomize_max_bytes) if direct or sketched else None
    g = gram_from_source(cached or source, side=side, max_memory=max_memory, deflate=deflate)
    e = esd_from_gram(g, scale=scale, jac_error2=g.class_sum_residual2)
    row: dict[str, Any] = spectral_metrics(e.eigenvalues, rank=e.rank)
    null: RandomizedNull | None = None
    J = cached.array() if cached is not None and direct else None
    if direct and J is None:
        logger.warning("%s: randomized null skipped: 𝒥 exceeds randomize_max_bytes", name)
    if J is not None:
        null = randomized_null(J, seed=seed, scale=scale, eigenvalues=e.eigenvalues,
                               eig_tol=e.tol)
    cols = (g.k - 1) * g.d if source.rows_sum_to_zero else g.k * g.d
    ht, fit = heavy_tail_columns(
        e.eigenvalues, rank=e.rank, n=g.n, cols=cols, null=null, tol=e.tol, **fit_kwargs
    )
    row.update(ht)
    if ht.get("warning"):  # one line per row, naming it (the table's warning column)
        logger.warning("%s: %s", name, ht["warning"])
    if null is None:  # counts -1, values NaN
        row.update({c: -1 if c.startswith("num_") else math.nan for c in NULL_COLUMNS})
    row.update(n=g.n, k=g.k, d=g.d, side=g.side, dtype=g.dtype, tol=e.tol)
    if sketched:
        row.update(sketch_columns(name, cached or source, row, sketched, scale, randomize))
    else:
        row.update(exact_error_bars(row))
    unresolved = e.unresolved
    if "rank" in unresolved.split(",") and e.rank < min(g.n, cols):
        # the MP fit takes the eigenvalues below tol as zeros: float32 leaves it unresolved too
        unresolved = ",".join([unresolved, *MP_COLUMNS])
    row["unresolved"] = unresolved
    if unresolved:
        note = f"float32 could not resolve {unresolved}"
        row["warning"] = f"{row['warning']}; {note}" if row.get("warning") else note
        logger.warning("%s: %s (rerun with dtype=torch.float64)", name, note)
    logger.info("%s: %d eigenvalues, alpha %.3g", name, len(e.eigenvalues), row["alpha"])
    return row, e, fit, null


def exact_error_bars(row: dict[str, Any]) -> dict[str, Any]:
    """An exact row's error bars: zero width (no sampling error; round-off aside)."""
    lam, tr = row.get("lambda_max", math.nan), row.get("trace", math.nan)
    return {"sketch_r": 0, "lambda_max_se": 0.0, "lambda_max_low": lam, "lambda_max_high": lam,
            "trace_se": 0.0, "trace_low": tr, "trace_high": tr}
