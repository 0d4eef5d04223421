"""analyze(): a short driver over the room's parts (see :mod:`jacspec.analysis`).

Its arguments are resolved once (:func:`~jacspec.analysis.settings.run_settings`), every row
is planned before any Jacobian (:func:`~jacspec.analysis.plan.plan_rows`), each planned row
is computed by its function (:data:`~jacspec.analysis.rows.ROW_FUNCTIONS`: exact, estimated,
skipped) and the rows are gathered into one table (:class:`~jacspec.analysis.result.Analysis`).
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch
from torch import nn

from jacspec._util.names import MAIN
from jacspec._util.progress import progress_bar
from jacspec.analysis.columns import ROW_INFO, ROW_METRICS
from jacspec.analysis.plan import RowPlan, plan_rows
from jacspec.analysis.result import Analysis
from jacspec.analysis.rows import ROW_FUNCTIONS, Row, skipped_row
from jacspec.analysis.settings import RANDOMIZE_MAX_BYTES, RunSettings, record_plans, record_row
from jacspec.analysis.settings import run_settings as _run_settings
from jacspec.data.batches import require_reiterable
from jacspec.heavytail.powerlaw import fit_powerlaw
from jacspec.jacobian.options import FIELDS as OPTION_FIELDS
from jacspec.jacobian.options import JacobianOptions

__all__ = ["analyze", "check_fit_kwargs"]


def analyze(
    model: nn.Module, data: Any, *, output: str | None = None, scale: str = "n",
    side: str = "auto", method: str = "exact", layers: str | Sequence[str] | None = None,
    randomize: bool = True, randomize_max_bytes: int = RANDOMIZE_MAX_BYTES, seed: int = 0,
    options: JacobianOptions | None = None, dtype: torch.dtype | None = None,
    device: torch.device | str | None = None, batch_size: int | None = None,
    max_memory: int | None = None, deflate: bool = True, jacobian_method: str | None = None,
    progress: bool | None = None, route: str | None = None,
    sketch: int | str | None = "auto", **fit_kwargs: Any,
) -> Analysis:
    """Analyse the data Jacobian's ESD of ``model`` on ``data`` (see the module docstring).

    ``layers``: None (input->output only), ``"all"`` or module names, adding the rows
    ``"input->NAME"`` (``d h / d x``) and ``"NAME->output"`` (``d g / d h``); ``"all"``
    takes every activation module and every module owning parameters except the output
    layer, keeping those called once per forward pass with one tensor output and skipping
    the others with one warning (:mod:`jacspec.jacobian.layers`). Layer rows need an eager
    ``nn.Module``. Every row is planned first (:func:`plan_rows`; column ``method``).
    ``method``: ``"exact"`` (a layer row whose Gram exceeds ``max_memory`` is skipped with
    a warning, its ``warning`` column saying why), ``"auto"`` (rows out of exact reach are
    estimated by SLQ, :func:`jacspec.spectra.estimate.estimate_from_batches`; such a row holds the
    estimate's trace and lambda_max only) or ``"slq"`` (every row estimated). ``side``,
    ``deflate`` (softmax rows in the class-sum-zero basis) and ``jacobian_method`` (the
    engine's batched backward for the input->output Jacobian: ``"auto"``, ``"replicate"``,
    ``"batched_grad"``, ``"loop"``) apply to every method. ``options``
    (:class:`~jacspec.jacobian.options.JacobianOptions`) or its fields as keywords
    (``output``, default softmax, ``dtype``, ``device``, ``batch_size``,
    ``jacobian_method``, ``progress``, ``check_independence``, ``sketch_kind``,
    ``sketch_seed``, ``route``, ``sketch``) reach every row's engine whole (a keyword given
    wins over ``options``). ``route`` (input->output row): ``"auto"`` takes the factored route
    (:mod:`jacspec.jacobian.factored`) when it applies, except when the randomized null needs
    the entries of 𝒥 and they fit ``randomize_max_bytes`` (then ``"direct"``); an explicit
    ``"factored"`` skips the null with a warning. ``progress``: one bar over the rows when
    layers are analysed, else
    the Jacobian bar. ``fit_kwargs`` go to
    :func:`jacspec.heavytail.powerlaw.fit_powerlaw` (``xmin_window``, ``fingers``,
    ``distribution``...)
    and are checked before any computation. ``sketch``: the input->output row from ``r``
    shared random output projections (an unbiased estimate of ``M`` at ``r/k`` of the
    backward passes, :mod:`jacspec.jacobian.sketch`); ``"auto"`` (default): ``r = 64`` when
    the model has ``k >= 200`` outputs (logged), else exact (or ``options.sketch`` when
    set); 0 or None: exact. Applies to exact rows; a sketched row has ``method="sketched"``,
    its ``sketch_r`` and its error bars in the table and in :meth:`Analysis.summary`, and one
    logged warning line. The projections are drawn with ``seed`` unless
    ``options.sketch_seed`` is set; ``settings["sketch"]`` records ``r``, the seed used and
    ``seed_from`` (``"seed"`` or ``"options.sketch_seed"``).
    """
    require_reiterable(data, "analyze")
    # the other JacobianOptions fields as keywords (method is analyze's own: exact/auto/slq)
    jac_fields = {key: fit_kwargs.pop(key) for key in list(fit_kwargs)
                  if key in OPTION_FIELDS and key != "method"}
    check_fit_kwargs(fit_kwargs)
    run = _run_settings(
        model, data, options=options, jac_fields=jac_fields, fit_kwargs=fit_kwargs,
        output=output, scale=scale, side=side, method=method, layers=layers,
        randomize=randomize, randomize_max_bytes=randomize_max_bytes, seed=seed, dtype=dtype,
        device=device, batch_size=batch_size, max_memory=max_memory, deflate=deflate,
        jacobian_method=jacobian_method, progress=progress, route=route, sketch=sketch)
    opts = run.options
    plans = plan_rows(
        run.model, run.data, layers=run.layers, output=opts.output, side=side, method=method,
        deflate=deflate, dtype=opts.dtype, device=opts.device, max_memory=max_memory,
        route=opts.route, null_bytes=randomize_max_bytes if randomize else 0)
    record_plans(run, plans)
    bar = progress_bar(run.row_bar, total=len(plans), desc="analyze", unit="row")
    rows: dict[str, Row] = {}
    try:
        for p in plans:
            if bar is not None:
                bar.set_postfix_str(p.label)
            rows[p.label] = ROW_FUNCTIONS.get(p.method, skipped_row)(p, run)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return _analysis(run, plans, rows)


def _analysis(run: RunSettings, plans: list[RowPlan], rows: dict[str, Row]) -> Analysis:
    """The rows gathered into one table (index ``matrix``; every column of ROW_METRICS and
    ROW_INFO, NaN or "" where a row did not compute it) with their ESDs, fits and nulls."""
    table_rows: dict[str, dict[str, Any]] = {}
    for p in plans:
        row = rows[p.label]
        columns = row.columns
        columns.setdefault("k", p.k)
        columns.setdefault("d", p.d)
        columns["method"] = record_row(run, p, row.route, row.sketch)
        table_rows[p.label] = columns
    table = pd.DataFrame.from_dict(table_rows, orient="index")
    for col in ROW_METRICS + ROW_INFO:  # every declared column, NaN where not computed
        if col not in table.columns:
            table[col] = "" if col in ("warning", "unresolved") else math.nan
    table.index.name = "matrix"
    estimates = {label: r.estimate for label, r in rows.items() if r.estimate is not None}
    return Analysis(
        table=table,
        esds={label: r.esd for label, r in rows.items() if r.esd is not None},
        fits={label: r.fit for label, r in rows.items()},
        nulls={label: r.null for label, r in rows.items()},
        settings=run.settings,
        estimate=estimates.get(MAIN),
        estimates=estimates,
    )


def check_fit_kwargs(fit_kwargs: dict[str, Any], where: str = "analyze") -> None:
    """Refuse, before any computation, keywords that :func:`fit_powerlaw` does not take."""
    params = list(inspect.signature(fit_powerlaw).parameters.values())[1:]
    accepted = [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    bad = [key for key in fit_kwargs if key not in accepted]
    if not bad:
        return
    own = [
        p for p in inspect.signature(analyze).parameters if p not in ("model", "data", "fit_kwargs")
    ] + [f for f in OPTION_FIELDS if f not in inspect.signature(analyze).parameters]
    close = difflib.get_close_matches(bad[0], own + accepted, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(
        f"{where}() got an unexpected keyword {bad[0]!r}{hint}; it accepts {', '.join(own)}, "
        f"and for the power-law fit (fit_powerlaw): {', '.join(accepted)}"
    )
