"""Figures of an :class:`~jacspec.analysis.Analysis`, written where the CLI asks."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from jacspec._util.names import MAIN
from jacspec.heavytail.mp import MPFit, fit_mp
from jacspec.report.esd_plots import (
    plot_esd_estimate,
    plot_esd_linear,
    plot_esd_loglog,
    plot_esd_pair,
    plot_randomized_esd,
)

#: File names of :func:`analysis_figures` (exact ESD; ``esd_slq.png`` for an estimate).
FIGURE_NAMES = ("esd_loglog.png", "esd_linear.png", "esd_randomized.png", "esd_slq.png")


def row_mp_fit(analysis: Any, matrix: str = MAIN) -> MPFit | None:
    """The Marchenko-Pastur bulk of ``matrix``'s row, rebuilt from its columns: ``mp_sigma2``
    and ``lambda_plus`` = sigma^2 (1 + Q^{-1/2})^2 give Q, and
    :func:`jacspec.heavytail.mp.fit_mp`
    with that sigma^2 on the ESD's eigenvalues (rows = the row's ``n``; those below the ESD's
    rank tolerance as zeros, as the row's fit) gives edges and spikes. None when the row has
    no MP fit (NaN columns: no bulk above the rank tolerance)."""
    table = analysis.table
    if matrix not in table.index or matrix not in analysis.esds:
        return None
    row = table.loc[matrix]
    s2, plus, n = (row.get(c) for c in ("mp_sigma2", "lambda_plus", "n"))
    try:
        s2, plus, n = float(s2), float(plus), int(n)
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(s2) and math.isfinite(plus) and s2 > 0 and plus > s2 and n > 0):
        return None
    q = 1.0 / (math.sqrt(plus / s2) - 1.0) ** 2
    try:
        e = analysis.esds[matrix]
        return fit_mp(e.eigenvalues, q, rows=n, sigma2=s2, tol=e.tol)
    except ValueError:
        return None


def analysis_figures(analysis: Any, matrix: str = MAIN) -> dict[str, Figure]:
    """``{file name: Figure}`` for one matrix of an analysis.

    Exact ESD: ``esd_loglog.png`` (log-log ESD with the power-law fit), ``esd_linear.png``
    (linear ESD with the MP bulk of the row's fit) and ``esd_randomized.png`` (against the
    randomized null, when computed). Estimated density (``method="slq"``/``"auto"`` beyond
    exact reach): ``esd_slq.png`` (CDF and density of the SLQ estimate).
    """
    if matrix not in analysis.esds:
        estimate = getattr(analysis, "estimate", None)
        if matrix == MAIN and estimate is not None:
            label = (f"{matrix}: estimated ESD of {'M/n' if estimate.scale == 'n' else 'M'}"
                     f" ({estimate.output}, {estimate.method.upper()})")
            return {"esd_slq.png": plot_esd_estimate(estimate, title=label)}
        raise ValueError(f"matrix={matrix!r} has no ESD in this analysis; "
                         f"expected one of {', '.join(analysis.esds) or '(none)'}")
    e = analysis.esds[matrix]
    vals = e.eigenvalues[: max(e.rank, 1)]
    label = f"{matrix}: ESD of {'M/n' if e.scale == 'n' else 'M'} ({e.output})"
    fit = analysis.fits.get(matrix)
    figs = {
        "esd_loglog.png": plot_esd_loglog(vals, fit, title=label),
        "esd_linear.png": plot_esd_linear(
            e.eigenvalues, mp=row_mp_fit(analysis, matrix), title=label,
            xmin=fit.xmin if fit is not None else None,
        ),
    }
    null = analysis.nulls.get(matrix)
    if null is not None:
        figs["esd_randomized.png"] = plot_randomized_esd(
            null, title=f"{matrix}: real vs randomized")
    return figs


def save_analysis_figures(analysis: Any, folder: str | Path, *, dpi: int = 120) -> list[Path]:
    """Write :func:`analysis_figures` of the input-output matrix into ``folder`` (created if
    missing) under their fixed names; returns the written paths."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fig in analysis_figures(analysis).items():
        fig.savefig(out / name, dpi=dpi, bbox_inches="tight")
        written.append(out / name)
    return written


def demo_figure(analyses: dict[str, Any]) -> Figure:
    """True-label against random-label ESDs (log-log, with both power-law fits)."""
    (la, a), (lb, b) = list(analyses.items())[:2]
    ea, eb = a.esds[MAIN], b.esds[MAIN]
    return plot_esd_pair(
        ea.eigenvalues[: max(ea.rank, 1)],
        eb.eigenvalues[: max(eb.rank, 1)],
        labels=(la, lb),
        fits=(a.fits.get(MAIN), b.fits.get(MAIN)),
        title="Jacobian ESD (M/n, softmax) on the training set",
    )


def demo_null_figures(analyses: dict[str, Any]) -> dict[str, Figure]:
    """Each network's ESD against its randomized null."""
    return {
        label: plot_randomized_esd(a.nulls[MAIN], title=f"{label}: real vs randomized")
        for label, a in analyses.items()
        if a.nulls.get(MAIN) is not None
    }
