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

Every row has every column of :data:`~jacspec.analysis_columns.ROW_METRICS` (NaN where it
was not computed) and of :data:`~jacspec.analysis_columns.ROW_INFO` (declared in
:mod:`jacspec.analysis_columns`); the :class:`~jacspec.track.tracker.Tracker` records any of
the former.

Eigenvalues at or below ``tol`` are zeros for every fit (power law, MP, the null's MP fit),
so ``num_spikes <= rank`` and the direct and factored routes give the same columns. The
power law is fitted to the eigenvalues above ``tol``; the MP bulk to all min(n, cols)
eigenvalues (zeros included; structural softmax zeros left out). ``warning``: jacspec's own
warnings, joined by "; " ("no power-law fit: ...", "no MP bulk above the rank tolerance
(...)", "float32 could not resolve ...", "skipped: ...", "estimated density"); no
WeightWatcher "over-trained"/"under-trained" label (alpha thresholds calibrated on weight
matrices, not on Jacobian ESDs).
"""

from __future__ import annotations

import difflib
import inspect
import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from jacspec._util.json import jsonable
from jacspec._util.names import MAIN
from jacspec._util.progress import progress_bar
from jacspec._util.validation import check_choice
from jacspec.analysis_columns import ROW_INFO, ROW_METRICS, SKETCH_COLUMNS, SKETCHED
from jacspec.analysis_plan import RowPlan, plan_rows
from jacspec.data.batches import require_reiterable
from jacspec.heavytail.columns import MP_COLUMNS, NULL_COLUMNS, heavy_tail_metrics
from jacspec.heavytail.nulls import RandomizedNull, randomized_null
from jacspec.heavytail.powerlaw import PowerLawFit, fit_powerlaw
from jacspec.jacobian.input_module import at_input_module
from jacspec.jacobian.options import FIELDS as OPTION_FIELDS
from jacspec.jacobian.options import JacobianOptions, resolve_options
from jacspec.jacobian.source import JacobianSource
from jacspec.spectra.exact import ESD, SCALES, esd_from_gram
from jacspec.spectra.gram import SIDES, gram_from_source
from jacspec.spectra.metrics import spectral_metrics

logger = logging.getLogger(__name__)

METHODS = ("exact", "auto", "slq")
#: Largest data Jacobian (float64 bytes) held for the randomized null.
RANDOMIZE_MAX_BYTES = 512 * 2**20
__all__ = ["MAIN", "ROW_INFO", "ROW_METRICS", "SKETCHED", "Analysis", "RowPlan", "analyze",
           "heavy_tail_columns", "plan_rows"]


@dataclass(frozen=True)
class Analysis:
    """Result of :func:`analyze`: ``table`` (one row per matrix) and what produced it.

    ``esds``: exact ESDs by row; ``estimates``: SLQ estimates by row (``estimate`` is the
    input->output one, None when exact); skipped rows are in neither.
    """

    table: pd.DataFrame
    esds: dict[str, ESD]
    fits: dict[str, PowerLawFit | None]
    nulls: dict[str, RandomizedNull | None]
    settings: dict[str, Any] = field(default_factory=dict)
    estimate: Any = None
    estimates: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Headline numbers of the input-output matrix plus layer means of alpha (JSON-able);
        ``method`` says how the row was computed, and a sketched row adds ``sketch_r`` and its
        error bars (``lambda_max_se``, ``lambda_max_low``, ``lambda_max_high``, ``trace``,
        ``trace_se``, ``trace_low``, ``trace_high``). At an input module, ``input_module``
        names it (the row keeps its name ``input->output``: ``input`` is that module's
        output)."""
        main = self.table.loc[MAIN].to_dict()
        out = {
            k: main.get(k)
            for k in (
                "method",
                "alpha",
                "alpha_weighted",
                "log_norm",
                "lambda_max",
                "stable_rank",
                "entropy",
                "rand_distance",
                "warning",
            )
        }
        if main.get("method") == SKETCHED:
            out.update({k: main.get(k) for k in ("trace", *SKETCH_COLUMNS)})
        if self.settings.get("input_module") is not None:  # the rows' "input" is h
            out["input_module"] = self.settings["input_module"]
        if len(self.table) > 1:
            layers = self.table.drop(index=MAIN)
            out["layers_alpha_mean"] = float(layers["alpha"].mean())
            out["layers_log_norm_mean"] = float(layers["log_norm"].mean())
        return jsonable(out)

    def to_dict(self) -> dict[str, Any]:
        """``{"settings", "eigenvalues", "metrics", ...}``: eigenvalues and metrics are the
        input-output matrix's; ``"layers"`` holds every row when layers were analysed."""
        main_esd = self.esds.get(MAIN)
        out: dict[str, Any] = {
            "settings": {**self.settings, **(main_esd.describe() if main_esd else {})},
            "eigenvalues": main_esd.eigenvalues.tolist() if main_esd is not None else [],
            "metrics": self.table.loc[MAIN].to_dict(),
            "summary": self.summary(),
        }
        if self.estimate is not None:
            out["estimate"] = self.estimate.summary()
        if len(self.table) > 1:
            out["layers"] = [
                {"name": name, **row.to_dict()} for name, row in self.table.iterrows()
            ]
        return jsonable(out)

    def to_frame(self) -> pd.DataFrame:
        """The table: one row per matrix (index: its name), WeightWatcher-named columns."""
        return self.table

    def plot(self, kind: str | None = None, *, matrix: str = MAIN) -> Any:
        """One figure of ``matrix``'s ESD: ``kind`` "loglog" (with the power-law fit),
        "linear" (with the MP bulk), "randomized" (against the randomized null) or "slq"
        (an estimate's CDF and density); None: the first of these the analysis has.
        All figures at once: :func:`jacspec.report.analysis.analysis_figures`."""
        from jacspec.report.analysis import analysis_figures

        figs = analysis_figures(self, matrix)
        kinds = {name.removeprefix("esd_").removesuffix(".png"): name for name in figs}
        if kind is None:
            kind = next(iter(kinds))
        if kind not in kinds:
            raise ValueError(f"kind={kind!r} is not available for {matrix!r}; expected one of "
                             f"{', '.join(kinds)}")
        return figs[kinds[kind]]


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


def _analyse_matrix(
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
            UserWarning, stacklevel=3,
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
        row.update(_sketch_columns(name, cached or source, row, sketched, scale, randomize))
    else:
        row.update(_exact_error_bars(row))
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


def _sketch_options(opts: JacobianOptions, k: int, seed: Any) -> JacobianOptions:
    """The input->output row's options with its sketch resolved for ``k`` outputs: ``r`` (or
    None: exact) and, when it sketches and ``options.sketch_seed`` is None, ``seed`` as the
    projections' seed (exact rows keep the options as given)."""
    from jacspec.jacobian.sketch import resolve_sketch

    r = resolve_sketch(opts.sketch, k, rows_sum_to_zero=opts.output == "softmax")
    if r is None:
        return opts.replace(sketch=None)
    if opts.sketch_seed is None and isinstance(seed, (int, np.integer)) and not isinstance(
            seed, bool) and seed >= 0:
        return opts.replace(sketch=r, sketch_seed=int(seed))
    return opts.replace(sketch=r)


def _exact_error_bars(row: dict[str, Any]) -> dict[str, Any]:
    """An exact row's error bars: zero width (no sampling error; round-off aside)."""
    lam, tr = row.get("lambda_max", math.nan), row.get("trace", math.nan)
    return {"sketch_r": 0, "lambda_max_se": 0.0, "lambda_max_low": lam, "lambda_max_high": lam,
            "trace_se": 0.0, "trace_low": tr, "trace_high": tr}


def _sketch_columns(
    name: str, source: JacobianSource, row: dict[str, Any], info: dict[str, Any], scale: str,
    randomize: bool,
) -> dict[str, Any]:
    """A sketched row's ``k`` (the model's outputs), ``sketch_r`` and jackknife error bars
    (:func:`jacspec.jacobian.sketch.sketch_error_bars`; their settings go to
    ``info["error_bars"]``), logged in one line with how to get the exact row."""
    from jacspec.jacobian.sketch import sketch_error_bars

    r = int(info["r"])
    cols: dict[str, Any] = {"k": int(info["k_full"]), "sketch_r": r}
    if r >= 2:
        bars = sketch_error_bars(source, scale=scale)
        cols.update({c: bars[c] for c in SKETCH_COLUMNS[1:]})
        info["error_bars"] = {k: bars[k] for k in ("groups", "level", "fpc",
                                                   "lambda_max_jackknife", "trace_jackknife")}
        spread = (f"lambda_max {row['lambda_max']:.4g} (se {bars['lambda_max_se']:.2g}), "
                  f"trace {row['trace']:.4g} (se {bars['trace_se']:.2g})")
    else:
        cols.update({c: math.nan for c in SKETCH_COLUMNS[1:]})
        spread = "no error bars (they need r >= 2)"
    null = "; randomized null skipped (sketched rows are not the entries of 𝒥)" if (
        randomize) else ""
    logger.warning(
        "analyze: %s sketched from r=%d of k=%d outputs (%s projections, seed %d): %s%s; "
        "pass sketch=0 for the exact row", name, r, info["k_full"], info["kind"],
        info["seed"], spread, null,
    )
    return cols


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


def _estimated_row(est: Any) -> dict[str, Any]:
    """The columns an SLQ estimate gives: trace, lambda_max and what follows from them."""
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


def analyze(
    model: nn.Module,
    data: Any,
    *,
    output: str | None = None,
    scale: str = "n",
    side: str = "auto",
    method: str = "exact",
    layers: str | Sequence[str] | None = None,
    randomize: bool = True,
    randomize_max_bytes: int = RANDOMIZE_MAX_BYTES,
    seed: int = 0,
    options: JacobianOptions | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    batch_size: int | None = None,
    max_memory: int | None = None,
    deflate: bool = True,
    jacobian_method: str | None = None,
    progress: bool | None = None,
    route: str | None = None,
    sketch: int | str | None = "auto",
    **fit_kwargs: Any,
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
    check_choice("method", method, METHODS)
    check_choice("scale", scale, SCALES)
    check_choice("side", side, SIDES)
    opts = resolve_options(
        options, labels={"method": "jacobian_method"}, output=output, dtype=dtype,
        device=device, batch_size=batch_size, method=jacobian_method, progress=progress,
        route=route, **jac_fields,
    )
    if sketch != "auto" or opts.sketch is None:
        opts = opts.replace(sketch=sketch)
    seed_from = "options.sketch_seed" if opts.sketch_seed is not None else "seed"
    given_opts = opts
    model, data, opts = at_input_module(model, data, opts)
    if layers is not None and not isinstance(layers, str):
        layers = list(layers)
    settings: dict[str, Any] = {
        "output": opts.output,
        "scale": scale,
        "method": method,
        "side": side,
        "deflate": bool(deflate),
        "jacobian_method": opts.method,
        "jacobian": given_opts.to_dict(),
        "seed": seed,
        "randomize": randomize,
        "layers": layers,
        "fit": dict(fit_kwargs),
        # the module whose output h is the rows' "input" (input->output, input->L)
        "input_module": given_opts.input_module,
        "sketch": None,
    }
    plans = plan_rows(
        model, data, layers=layers, output=opts.output, side=side, method=method,
        deflate=deflate, dtype=opts.dtype, device=opts.device, max_memory=max_memory,
        route=opts.route, null_bytes=randomize_max_bytes if randomize else 0,
    )
    settings["rows"] = {p.label: {"method": p.method, "reason": p.reason} for p in plans}
    main_plan = plans[0]
    if method != "exact":
        settings["estimate_method"] = main_plan.method
        settings["estimate_reason"] = main_plan.reason
    skipped = [p for p in plans if p.method == "skipped"]
    if skipped:
        warnings.warn(
            "analyze: rows skipped (they do not fit in memory): "
            + "; ".join(f"{p.label}: {p.reason}" for p in skipped),
            UserWarning,
            stacklevel=2,
        )
    exact_kw = dict(
        scale=scale,
        max_memory=max_memory,
        randomize=randomize,
        randomize_max_bytes=randomize_max_bytes,
        seed=seed,
        fit_kwargs=fit_kwargs,
        deflate=deflate,
    )
    show = opts.progress
    bar = progress_bar(bool(show and layers is not None), total=len(plans), desc="analyze",
                       unit="row")
    row_opts = opts.replace(progress=show and bar is None)

    rows: dict[str, dict[str, Any]] = {}
    esds: dict[str, ESD] = {}
    fits: dict[str, PowerLawFit | None] = {}
    nulls: dict[str, RandomizedNull | None] = {}
    estimates: dict[str, Any] = {}
    try:
        for p in plans:
            if bar is not None:
                bar.set_postfix_str(p.label)
            if p.method == "exact":
                src_opts = row_opts
                if (p.label == MAIN and randomize and row_opts.route == "auto"
                        and p.route == "direct"):
                    # as planned: the null needs 𝒥 and it fits (plan_rows sized this row for
                    # the route it takes; without the null, auto decides by itself)
                    src_opts = row_opts.replace(route="direct")
                if p.label == MAIN and src_opts.sketch is not None:
                    src_opts = _sketch_options(src_opts, p.k, seed)
                source = JacobianSource.from_model(model, data, src_opts, target=p.label)
                settings["rows"][p.label]["route"] = source.route
                sketched = source.info.get("sketch")
                row_side = "auto" if sketched and side == "auto" else p.side
                row, esds[p.label], fits[p.label], nulls[p.label] = _analyse_matrix(
                    p.label, source, side=row_side, **exact_kw
                )
                if p.label == MAIN and sketched:
                    settings["sketch"] = {**sketched, "seed_from": seed_from}
                    settings["rows"][p.label].update(
                        method=SKETCHED,
                        reason=f"sketched: r={sketched['r']} {sketched['kind']} projections of "
                        f"k={sketched['k_full']} outputs (seed {sketched['seed']}); sketch=0 "
                        "for the exact row",
                    )
            elif p.method == "slq":
                from jacspec.spectra.estimate import estimate_from_batches

                # auto: direct (an estimated density over the factored dual's kw dimensions
                # would carry another zero atom than 𝒥's); an explicit "factored" is kept
                slq_opts = row_opts.replace(route="direct") if row_opts.route == "auto" else (
                    row_opts)
                slq_opts = slq_opts.replace(sketch=0)  # sketching applies to exact rows
                source = JacobianSource.from_model(model, data, slq_opts, target=p.label)
                settings["rows"][p.label]["route"] = source.route
                est = estimate_from_batches(
                    lambda src=source: src, n=p.n, k=p.k, d=source.d, plan=p.esd_plan,
                    output=p.output, scale=scale, dtype=source.dtype, deflate=deflate,
                    seed=seed, progress=row_opts.progress,
                )
                estimates[p.label] = est
                row = _estimated_row(est)
                fits[p.label], nulls[p.label] = None, None
            else:
                row = {"n": p.n, "side": p.side, "warning": f"skipped: {p.reason}"}
                fits[p.label], nulls[p.label] = None, None
            row.setdefault("k", p.k)
            row.setdefault("d", p.d)
            row["method"] = settings["rows"][p.label]["method"]
            rows[p.label] = row
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    table = pd.DataFrame.from_dict(rows, orient="index")
    for col in ROW_METRICS + ROW_INFO:  # every declared column, NaN where not computed
        if col not in table.columns:
            table[col] = "" if col in ("warning", "unresolved") else math.nan
    table.index.name = "matrix"
    return Analysis(
        table=table,
        esds=esds,
        fits=fits,
        nulls=nulls,
        settings=settings,
        estimate=estimates.get(MAIN),
        estimates=estimates,
    )
