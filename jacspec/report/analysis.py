"""Figures of an :class:`~jacspec.analysis.Analysis`, written where the CLI asks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from jacspec.report.esd_plots import (
    plot_esd_linear,
    plot_esd_loglog,
    plot_esd_pair,
    plot_randomized_esd,
)

MAIN = "input->output"


def analysis_figures(analysis: Any, matrix: str = MAIN) -> dict[str, Figure]:
    """Log-log ESD with the power-law fit, linear ESD, and the randomized null if computed."""
    e = analysis.esds[matrix]
    vals = e.eigenvalues[: max(e.rank, 1)]
    label = f"{matrix}: ESD of {'M/n' if e.scale == 'n' else 'M'} ({e.output})"
    figs = {
        "loglog": plot_esd_loglog(vals, analysis.fits.get(matrix), title=label),
        "linear": plot_esd_linear(vals, title=label),
    }
    null = analysis.nulls.get(matrix)
    if null is not None:
        figs["randomized"] = plot_randomized_esd(null, title=f"{matrix}: real vs randomized")
    return figs


def save_analysis_figure(analysis: Any, path: str | Path) -> Path:
    """Write the log-log figure to ``path`` and the others beside it (``<stem>_<kind>.png``)."""
    path = Path(path)
    if path.suffix == "":
        path = path.with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    for kind, fig in analysis_figures(analysis).items():
        target = path if kind == "loglog" else path.with_name(f"{path.stem}_{kind}{path.suffix}")
        fig.savefig(target, dpi=120, bbox_inches="tight")
    return path


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
