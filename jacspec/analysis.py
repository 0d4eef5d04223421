"""One call, one tidy table: the Jacobian ESD of a model on data, with heavy-tail metrics.

``analyze(model, data)`` computes the ESD of ``M/n`` for the input-output data Jacobian
(and, with ``layers=``, for each hidden layer's two Jacobians: input -> layer and
layer -> output), then for every matrix one row of metrics with WeightWatcher's names:

- spectral: num_evals, rank, trace, lambda_max, stable_rank, log_norm, log_spectral_norm,
  entropy, effective_rank (:mod:`jacspec.esd`);
- power law on the eigenvalues above the numerical-rank tolerance: alpha, xmin, xmax, D,
  sigma, num_pl_spikes, alpha_weighted = alpha log10 lambda_max, log_alpha_norm =
  log10 sum lambda^alpha, warning (:mod:`jacspec.powerlaw`);
- Marchenko-Pastur bulk fit with Q = n / cols (cols = kd, or (k-1)d for softmax rows, which
  sum to zero over classes): num_spikes, mp_softrank, mp_lambda_plus (:mod:`jacspec.nulls`);
- randomized null (entries of 𝒥 shuffled with ``seed``, when 𝒥 fits in
  ``randomize_max_bytes``): rand_distance, rand_lambda_max, num_traps (:mod:`jacspec.nulls`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from jacspec.batches import data_length, require_reiterable
from jacspec.errors import check_choice
from jacspec.esd import spectral_metrics
from jacspec.gram import gram_from_batches
from jacspec.heavytail import heavy_tail_metrics
from jacspec.jacobian import JacobianBatch, iter_jacobians
from jacspec.layers import hidden_layers, iter_layer_jacobians
from jacspec.nulls import RandomizedNull, fit_mp, randomized_null
from jacspec.powerlaw import PowerLawFit, fit_powerlaw
from jacspec.spectrum import ESD, SCALES, esd_from_gram

logger = logging.getLogger(__name__)

METHODS = ("exact", "auto", "slq")
#: Largest data Jacobian (float64 bytes) held for the randomized null.
RANDOMIZE_MAX_BYTES = 512 * 2**20
MAIN = "input->output"


@dataclass(frozen=True)
class Analysis:
    """Result of :func:`analyze`: ``table`` (one row per matrix) and what produced it."""

    table: pd.DataFrame
    esds: dict[str, ESD]
    fits: dict[str, PowerLawFit | None]
    nulls: dict[str, RandomizedNull | None]
    settings: dict[str, Any] = field(default_factory=dict)
    estimate: Any = None

    @property
    def summary(self) -> dict[str, Any]:
        """Headline numbers of the input-output matrix plus layer means of alpha."""
        main = self.table.loc[MAIN].to_dict()
        out = {
            k: main.get(k)
            for k in (
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
        if len(self.table) > 1:
            layers = self.table.drop(index=MAIN)
            out["layers_alpha_mean"] = float(layers["alpha"].mean())
            out["layers_log_norm_mean"] = float(layers["log_norm"].mean())
        return out

    def to_dict(self) -> dict[str, Any]:
        """``{"settings", "eigenvalues", "metrics", ...}``: eigenvalues and metrics are the
        input-output matrix's; ``"layers"`` holds every row when layers were analysed."""
        main_esd = self.esds.get(MAIN)
        out: dict[str, Any] = {
            "settings": {**self.settings, **(main_esd.describe() if main_esd else {})},
            "eigenvalues": main_esd.eigenvalues.tolist() if main_esd is not None else [],
            "metrics": _jsonable(self.table.loc[MAIN].to_dict()),
            "summary": _jsonable(self.summary),
        }
        if self.estimate is not None:
            out["estimate"] = self.estimate.summary()
        if len(self.table) > 1:
            out["layers"] = [
                {"name": name, **_jsonable(row.to_dict())} for name, row in self.table.iterrows()
            ]
        return out

    def to_frame(self) -> pd.DataFrame:
        return self.table


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, (np.floating, float)):
            v = float(v)
            v = v if math.isfinite(v) else None
        elif isinstance(v, np.integer):
            v = int(v)
        out[k] = v
    return out


def heavy_tail_columns(
    eigenvalues: np.ndarray,
    *,
    rank: int,
    n: int,
    cols: int,
    null: RandomizedNull | None = None,
    **fit_kwargs: Any,
) -> tuple[dict[str, Any], PowerLawFit | None]:
    """Power-law, MP and null columns for one ESD (eigenvalues descending, ``rank`` above tol).

    Fits use only the ``rank`` eigenvalues above the numerical-rank tolerance; a fit that
    cannot be made (too few eigenvalues) gives NaN columns and is logged.
    """
    vals = np.asarray(eigenvalues[: max(rank, 1)], dtype=np.float64)
    fit: PowerLawFit | None = None
    try:
        fit = fit_powerlaw(vals, **fit_kwargs)
    except ValueError as exc:
        logger.warning("power-law fit skipped: %s", exc)
    mp = None
    try:
        mp = fit_mp(vals, n / cols, rows=n)
    except ValueError as exc:
        logger.warning("Marchenko-Pastur fit skipped: %s", exc)
    row = heavy_tail_metrics(
        vals, fit=fit, mp=mp, null=null, errors="nan", **({} if fit is not None else fit_kwargs)
    )
    return row, fit


def _collect(
    batches: Iterator[JacobianBatch], store: list[torch.Tensor] | None, limit: int
) -> Iterator[JacobianBatch]:
    """Pass batches through, keeping float64 rows in ``store`` until ``limit`` bytes."""
    held = 0
    for b in batches:
        if store is not None and held >= 0:
            rows = b.rows.detach().to("cpu", torch.float64)
            held += rows.numel() * 8
            if held <= limit:
                store.append(rows)
            else:
                store.clear()
                held = -1
                logger.warning("randomized null skipped: 𝒥 exceeds randomize_max_bytes")
        yield b


def _analyse_matrix(
    name: str,
    batches: Iterator[JacobianBatch],
    *,
    n: int | None,
    output: str,
    scale: str,
    side: str,
    max_memory: int | None,
    randomize: bool,
    randomize_max_bytes: int,
    seed: int,
    fit_kwargs: dict[str, Any],
) -> tuple[dict[str, Any], ESD, PowerLawFit | None, RandomizedNull | None]:
    store: list[torch.Tensor] | None = [] if randomize else None
    g = gram_from_batches(
        _collect(batches, store, randomize_max_bytes),
        side=side,
        n=n,
        max_memory=max_memory,
        output=output,
    )
    e = esd_from_gram(g, scale=scale)
    row: dict[str, Any] = spectral_metrics(e.eigenvalues, rank=e.rank)
    null: RandomizedNull | None = None
    if store:
        J = torch.cat(store).numpy()
        null = randomized_null(J, seed=seed, scale=scale, eigenvalues=e.eigenvalues)
    cols = (g.k - 1) * g.d if output == "softmax" else g.k * g.d
    ht, fit = heavy_tail_columns(
        e.eigenvalues, rank=e.rank, n=g.n, cols=cols, null=null, **fit_kwargs
    )
    row.update(ht)
    if null is None:
        row.update(rand_distance=math.nan, rand_lambda_max=math.nan, num_traps=-1)
    row.update(n=g.n, k=g.k, d=g.d, side=g.side)
    logger.info("%s: %d eigenvalues, alpha %.3g", name, len(e.eigenvalues), row["alpha"])
    return row, e, fit, null


def analyze(
    model: nn.Module,
    data: Any,
    *,
    output: str = "softmax",
    scale: str = "n",
    side: str = "auto",
    method: str = "exact",
    layers: str | Sequence[str] | None = None,
    randomize: bool = True,
    randomize_max_bytes: int = RANDOMIZE_MAX_BYTES,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    batch_size: int | None = None,
    max_memory: int | None = None,
    progress: bool = False,
    **fit_kwargs: Any,
) -> Analysis:
    """Analyse the data Jacobian's ESD of ``model`` on ``data`` (see the module docstring).

    ``layers``: None (input->output only), ``"all"`` or module names, adding the rows
    ``"input->NAME"`` (``d h / d x``) and ``"NAME->output"`` (``d g / d h``). ``method``:
    ``"exact"``, or ``"auto"``/``"slq"`` to estimate the input-output density with
    :func:`jacspec.estimate.estimate_esd` when exact is out of reach (the row then holds the
    estimate's trace and lambda_max only). ``fit_kwargs`` go to
    :func:`jacspec.powerlaw.fit_powerlaw` (``xmin_window``, ``fingers``, ``distribution``...).
    """
    require_reiterable(data, "analyze")
    check_choice("method", method, METHODS)
    check_choice("scale", scale, SCALES)
    n = data_length(data)
    settings = {
        "output": output,
        "scale": scale,
        "method": method,
        "seed": seed,
        "randomize": randomize,
        "layers": layers if layers is None or isinstance(layers, str) else list(layers),
        "fit": dict(fit_kwargs),
    }
    common = dict(dtype=dtype, device=device, batch_size=batch_size)
    opts = dict(
        n=n,
        scale=scale,
        side=side,
        max_memory=max_memory,
        randomize=randomize,
        randomize_max_bytes=randomize_max_bytes,
        seed=seed,
        fit_kwargs=fit_kwargs,
    )
    rows: dict[str, dict[str, Any]] = {}
    esds: dict[str, ESD] = {}
    fits: dict[str, PowerLawFit | None] = {}
    nulls: dict[str, RandomizedNull | None] = {}
    estimate = None
    if method == "auto":
        from jacspec.estimate import plan_esd, problem_shape

        n_all, k, d = problem_shape(model, data, dtype)
        itemsize = 8 if dtype == torch.float64 else 4
        plan = plan_esd(n_all, k * d, itemsize=itemsize, side=side, max_memory=max_memory)
        settings["estimate_method"] = plan.method
        settings["estimate_reason"] = plan.reason
        method = "exact" if plan.method == "exact" else "slq"
    if method != "exact":
        from jacspec.estimate import estimate_esd

        estimate = estimate_esd(
            model,
            data,
            method=method,
            output=output,
            scale=scale,
            seed=seed,
            max_memory=max_memory,
            progress=progress,
            **common,
        )
        settings["estimate_method"] = estimate.method
    if estimate is None or estimate.method == "exact":
        batches = iter_jacobians(model, data, output=output, progress=progress, **common)
        rows[MAIN], esds[MAIN], fits[MAIN], nulls[MAIN] = _analyse_matrix(
            MAIN, batches, output=output, **opts
        )
    else:
        rows[MAIN] = {
            "trace": estimate.trace,
            "lambda_max": estimate.lambda_max,
            "log_norm": math.log10(estimate.trace) if estimate.trace > 0 else math.nan,
            "log_spectral_norm": math.log10(estimate.lambda_max)
            if estimate.lambda_max > 0
            else math.nan,
            "stable_rank": estimate.trace / estimate.lambda_max
            if estimate.lambda_max > 0
            else math.nan,
            "n": estimate.n,
            "side": estimate.side,
            "warning": "estimated density",
        }
        fits[MAIN], nulls[MAIN] = None, None
    if layers is not None:
        for name in hidden_layers(model, layers):
            for direction, label, out in (
                ("input_to_layer", f"input->{name}", "layer"),
                ("layer_to_output", f"{name}->output", output),
            ):
                batches = iter_layer_jacobians(
                    model, data, name, direction=direction, output=output, **common
                )
                rows[label], esds[label], fits[label], nulls[label] = _analyse_matrix(
                    label, batches, output=out, **opts
                )
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "matrix"
    return Analysis(
        table=table, esds=esds, fits=fits, nulls=nulls, settings=settings, estimate=estimate
    )
