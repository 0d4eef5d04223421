"""One function per planned row of :func:`jacspec.analyze`: exact, estimated, skipped.

Each takes the row's :class:`~jacspec.analysis.plan.RowPlan` and the resolved
:class:`~jacspec.analysis.settings.RunSettings` and returns a :class:`Row`: its columns and
what produced them. :data:`ROW_FUNCTIONS` maps a plan's ``method`` to its function.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jacspec._util.names import MAIN
from jacspec.analysis.matrix import analyse_matrix
from jacspec.analysis.plan import RowPlan, row_route
from jacspec.analysis.settings import RunSettings
from jacspec.analysis.sketched import sketch_options
from jacspec.heavytail.powerlaw import PowerLawFit
from jacspec.heavytail.randomized import RandomizedNull
from jacspec.jacobian.source import JacobianSource
from jacspec.spectra.exact import ESD

__all__ = ["ROW_FUNCTIONS", "Row", "estimated_row", "exact_row", "skipped_row"]


@dataclass(frozen=True)
class Row:
    """One row: its ``columns``, its exact ``esd`` or SLQ ``estimate``, power-law ``fit`` and
    randomized ``null``, the ``route`` its Jacobians took (None: not computed) and the
    sketch's ``info`` when the input->output row was sketched."""

    columns: dict[str, Any]
    esd: ESD | None = None
    estimate: Any = None
    fit: PowerLawFit | None = None
    null: RandomizedNull | None = None
    route: str | None = None
    sketch: dict[str, Any] | None = None


def exact_row(plan: RowPlan, run: RunSettings) -> Row:
    """The exact ESD of the row's ``M/n`` and every column (:func:`analyse_matrix`); the
    input->output row's sketch resolved for its ``k`` outputs (:func:`sketch_options`)."""
    opts = run.row_options
    route = row_route(plan, opts.route, randomize=run.randomize)
    if route != opts.route:
        opts = opts.replace(route=route)
    if plan.label == MAIN and opts.sketch is not None:
        opts = sketch_options(opts, plan.k, run.seed)
    source = JacobianSource.from_model(run.model, run.data, opts, target=plan.label)
    sketched = source.info.get("sketch")
    side = "auto" if sketched and run.side == "auto" else plan.side
    columns, e, fit, null = analyse_matrix(
        plan.label, source, scale=run.scale, side=side, max_memory=run.max_memory,
        randomize=run.randomize, randomize_max_bytes=run.randomize_max_bytes, seed=run.seed,
        fit_kwargs=run.fit_kwargs, deflate=run.deflate,
    )
    return Row(columns, esd=e, fit=fit, null=null, route=source.route,
               sketch=sketched if plan.label == MAIN and sketched else None)


def estimated_row(plan: RowPlan, run: RunSettings) -> Row:
    """The row's SLQ estimate (:func:`jacspec.spectra.estimate.estimate_from_batches`, never
    sketched) and the columns it gives (:func:`estimated_columns`)."""
    from jacspec.spectra.estimate import estimate_from_batches

    opts = run.row_options
    opts = opts.replace(route=row_route(plan, opts.route, randomize=run.randomize), sketch=0)
    source = JacobianSource.from_model(run.model, run.data, opts, target=plan.label)
    est = estimate_from_batches(
        lambda src=source: src, n=plan.n, k=plan.k, d=source.d, plan=plan.esd_plan,
        output=plan.output, scale=run.scale, dtype=source.dtype, deflate=run.deflate,
        seed=run.seed, progress=run.row_options.progress,
    )
    return Row(estimated_columns(est), estimate=est, route=source.route)


def skipped_row(plan: RowPlan, run: RunSettings) -> Row:
    """A row not computed: its shape, side and ``warning`` "skipped: <the plan's reason>"."""
    return Row({"n": plan.n, "side": plan.side, "warning": f"skipped: {plan.reason}"})


def estimated_columns(est: Any) -> dict[str, Any]:
    """The columns an SLQ estimate gives: trace, lambda_max and what follows from them
    (``log_norm = log10 trace``, ``log_spectral_norm = log10 lambda_max``, ``stable_rank =
    trace / lambda_max``)."""
    tr, lam = float(est.trace), float(est.lambda_max)
    return {
        "trace": tr,
        "lambda_max": lam,
        "log_norm": math.log10(tr) if tr > 0 else math.nan,
        "log_spectral_norm": math.log10(lam) if lam > 0 else math.nan,
        "stable_rank": tr / lam if lam > 0 else math.nan,
        "n": est.n,
        "side": est.side,
        "warning": "estimated density",
    }


#: The function computing a row, by its plan's ``method`` (any other: skipped).
ROW_FUNCTIONS: dict[str, Callable[[RowPlan, RunSettings], Row]] = {
    "exact": exact_row,
    "slq": estimated_row,
    "skipped": skipped_row,
}
