"""The score table: every metric of a zoo judged against the generalization gap.

:func:`score_metrics` gives each metric its Kendall tau (Jiang et al.'s, and scipy's tau-b),
granulated Psi, robust and worst-factor sign errors and paired comparisons
(:mod:`jacspec.zoo.rank.stats`, which defines them), PGDL's conditional mutual information
(:mod:`jacspec.zoo.rank.pgdl`; complete grids only) and, on request, bootstrap intervals
(:mod:`jacspec.zoo.rank.intervals`); :func:`score_store` scores the finished runs of a store.

The statistics, the grid helpers (varying keys, group codes, single-factor pairs,
:mod:`jacspec.zoo.rank.grid`), the CMI and :data:`~jacspec.zoo.run.store.NON_PREDICTORS` are
re-exported here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from jacspec._util.json import jsonable
from jacspec.zoo.rank.grid import (
    REPLICATE_KEYS,
    as_text,
    distinct_factors,
    is_complete_grid,
    is_unique_grid,
    select_runs,
    single_factor_pairs,
    varying_columns,
)
from jacspec.zoo.rank.intervals import score_intervals
from jacspec.zoo.rank.pgdl import conditional_mutual_information, replicate_cmi
from jacspec.zoo.rank.stats import (
    environment_errors,
    gap_noise,
    granulated_kendall,
    group_taus,
    kendall_tau,
    kendall_tau_a,
    paired_comparison,
    robust_sign_error,
    worst_factor_sign_error,
)
from jacspec.zoo.run.store import NON_PREDICTORS, Store

logger = logging.getLogger(__name__)

__all__ = [
    "NON_PREDICTORS", "REPLICATE_KEYS", "ScoreTable", "conditional_mutual_information",
    "default_paired", "environment_errors", "gap_noise", "granulated_kendall", "group_taus",
    "is_complete_grid", "is_unique_grid", "kendall_tau", "kendall_tau_a", "metric_columns",
    "paired_comparison", "robust_sign_error", "score_metrics", "score_store", "select_runs",
    "single_factor_pairs", "summarize_best", "varying_columns", "worst_factor_sign_error",
]


@dataclass(frozen=True)
class ScoreTable:
    """Scores of each metric against the gap, with the settings that produced them."""

    scores: dict[str, dict[str, Any]]
    factors: tuple[str, ...]
    gap: str
    num_models: int
    complete_grid: bool
    noise: float
    best: str | None = None
    paired: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    selection: dict[str, Any] = field(default_factory=dict)

    @property
    def settings(self) -> dict[str, Any]:
        """What the scores were computed with: factors, gap column, noise level, pairs, which
        runs were scored (``where``, ``converged``) and the bootstrap."""
        return {"factors": list(self.factors), "gap": self.gap, "noise": self.noise,
                "paired": [dict(zip(("factor", "a", "b"), t, strict=True)) for t in
                           dict.fromkeys((p["factor"], p["a"], p["b"]) for p in self.paired)],
                **self.selection}

    def summary(self) -> dict[str, Any]:
        """The best metric, the models scored, and each metric's Kendall tau and Psi."""
        return jsonable({"best": self.best, "num_models": self.num_models,
                         "complete_grid": self.complete_grid,
                         "kendall_tau": {m: s.get("kendall_tau") for m, s in self.scores.items()},
                         "psi": {m: s.get("psi") for m, s in self.scores.items()}})

    def to_frame(self) -> pd.DataFrame:
        """One row per metric (index), one column per scalar score."""
        rows = [{"metric": name, **{k: v for k, v in s.items() if not isinstance(v, dict)}}
                for name, s in self.scores.items()]
        return pd.DataFrame(rows).set_index("metric") if rows else pd.DataFrame()

    def to_dict(self) -> dict[str, Any]:
        """Scores by metric and every setting, JSON-able (NaN written as None)."""
        return jsonable({"metrics": self.scores, "factors": self.factors, "gap": self.gap,
                         "num_models": self.num_models, "complete_grid": self.complete_grid,
                         "noise": self.noise, "best": self.best, "paired": self.paired,
                         "settings": self.settings})


def score_metrics(df: pd.DataFrame, metrics: Sequence[str], factors: Sequence[str], *,
                  gap: str = "gap", noise: float | None = None,
                  paired: Sequence[tuple[str, Any, Any]] = (), bootstrap: int = 0,
                  seed: int = 0, level: float = 0.95,
                  selection: Mapping[str, Any] | None = None) -> ScoreTable:
    """Scores of every metric against ``gap``: ``kendall_tau`` (Jiang et al.'s, ties 0),
    ``kendall_tau_b`` (scipy's), ``psi``, ``cmi`` (PGDL's, a fraction; with seed
    replicates the mean over the seeds of PGDL's score), ``robust_sign_error``
    (Dziugaite et al.'s supremum) and ``worst_factor_sign_error``; ``sign_error_per_factor``
    holds the robust value per factor and ``mean_sign_error_per_factor`` the per-factor means.

    ``best`` is the metric with the largest ``|tau|`` (ties: larger Psi magnitude).
    ``paired`` lists ``(factor, a, b)`` comparisons, each made for every metric.
    ``bootstrap > 0``: each score also gets a ``level`` percentile-bootstrap interval,
    ``<score>_lo`` and ``<score>_hi``, from ``bootstrap`` resamples drawn with ``seed``
    (:func:`jacspec.zoo.rank.intervals.score_intervals`). ``selection`` (which runs ``df`` holds)
    is recorded in the settings.
    """
    if gap not in df:
        raise ValueError(f"gap column {gap!r} is not in the results")
    missing = [m for m in metrics if m not in df]
    if missing:
        raise ValueError(f"metric columns {missing} are not in the results")
    factors = [f for f in factors if f in df]
    if noise is None:
        noise = gap_noise(df, factors, gap=gap)
    complete = is_complete_grid(df, factors)
    scores: dict[str, dict[str, Any]] = {}
    for m in metrics:
        sub = df[np.isfinite(df[m].to_numpy(float))]
        psi, per_psi = granulated_kendall(sub, m, factors, gap=gap)
        cmi, per_cmi = _cmi(df, sub, m, factors, gap=gap, complete=complete)
        rse, per_rse = robust_sign_error(sub, m, factors, gap=gap, noise=noise)
        wse, per_wse = worst_factor_sign_error(sub, m, factors, gap=gap, noise=noise)
        scores[m] = {"kendall_tau": kendall_tau_a(sub[m], sub[gap]),
                     "kendall_tau_b": kendall_tau(sub[m], sub[gap]), "psi": psi, "cmi": cmi,
                     "robust_sign_error": rse, "worst_factor_sign_error": wse,
                     "num_models": int(len(sub)),
                     "psi_per_factor": per_psi, "cmi_per_set": per_cmi,
                     "sign_error_per_factor": per_rse,
                     "mean_sign_error_per_factor": per_wse}
        if bootstrap:
            for name, (lo, hi) in score_intervals(sub, m, factors, gap=gap, noise=noise,
                                                  reps=int(bootstrap), seed=seed,
                                                  level=level).items():
                scores[m][f"{name}_lo"], scores[m][f"{name}_hi"] = lo, hi
    finite = [(abs(s["kendall_tau"]), abs(s["psi"]) if np.isfinite(s["psi"]) else 0.0, m)
              for m, s in scores.items() if np.isfinite(s["kendall_tau"])]
    best = max(finite)[2] if finite else None
    pairs = tuple(paired_comparison(df, m, f, a, b, factors, gap=gap)
                  for (f, a, b) in paired if f in df for m in metrics)
    chosen = {**dict(selection or {}), "bootstrap": int(bootstrap), "level": float(level),
              "seed": int(seed)}
    return ScoreTable(scores=scores, factors=tuple(factors), gap=gap, num_models=len(df),
                      complete_grid=complete, noise=float(noise), best=best, paired=pairs,
                      selection=chosen)


def _cmi(df: pd.DataFrame, sub: pd.DataFrame, metric: str, factors: Sequence[str], *,
         gap: str, complete: bool) -> tuple[float, dict[str, float]]:
    """PGDL's CMI of ``metric`` (``sub``: the rows where it is finite): on a complete grid
    with one model per configuration, the scoring program's number; with seed replicates,
    the mean of that number over the seeds (:func:`replicate_cmi`); else NaN."""
    if not complete or len(sub) != len(df):
        return float("nan"), {}
    if is_unique_grid(sub, factors):
        return conditional_mutual_information(sub, metric, factors, gap=gap)
    rep = varying_columns(sub, REPLICATE_KEYS)
    if len(rep) != 1:
        return float("nan"), {}
    cmi, per_seed = replicate_cmi(sub, metric, factors, gap=gap, replicate=rep[0])
    return cmi, {f"{rep[0]}={k}": v for k, v in per_seed.items()}


def default_paired(df: pd.DataFrame) -> list[tuple[str, Any, Any]]:
    """Novak et al.'s comparisons present in ``df``: true vs random labels, augmentation off
    vs on, ReLU vs hard-sigmoid, smallest minibatch vs ``batch_size="full"`` (or, without
    full-batch runs, vs the largest batch size); ``a`` is the setting the paper found to
    generalize better, except for the activations."""
    wanted: list[tuple[str, Any, Any]] = [
        ("random_labels", False, True), ("augment", True, False),
        ("activation", "relu", "hard_sigmoid")]
    if "batch_size" in df:
        values = set(as_text(df["batch_size"]))
        sizes = sorted(int(v) for v in values if v.isdigit())
        if sizes and "full" in values:
            wanted.append(("batch_size", sizes[0], "full"))
        elif len(sizes) > 1:
            wanted.append(("batch_size", sizes[0], sizes[-1]))
    out = []
    for f, a, b in wanted:
        if f in df:
            vals = set(as_text(df[f]))
            if str(a) in vals and str(b) in vals:
                out.append((f, a, b))
    return out


def metric_columns(df: pd.DataFrame, config_keys: Sequence[str],
                   exclude: Sequence[str] = ()) -> list[str]:
    """Numeric columns of ``df`` that are neither configuration keys nor bookkeeping."""
    skip = set(config_keys) | set(exclude) | {
        "config_hash", "status", "attempts", "started", "finished", "duration", "error"}
    return [c for c in df.columns if c not in skip and pd.api.types.is_numeric_dtype(df[c])
            and not pd.api.types.is_bool_dtype(df[c]) and df[c].nunique(dropna=True) > 1]


def score_store(path: str, *, metrics: Sequence[str] | None = None,
                factors: Sequence[str] | None = None, gap: str = "gap",
                noise: float | None = None, where: Mapping[str, Any] | None = None,
                converged: bool = False, bootstrap: int = 0, seed: int = 0,
                level: float = 0.95) -> ScoreTable:
    """Score every metric of the finished runs in the store at ``path``.

    ``where``: keep the runs whose configuration has these values (``{"width": 128}``);
    ``converged``: keep the runs that reached their training criterion (the ``converged``
    column; runs that missed it are excluded, as Novak et al. do). ``factors`` default:
    configuration keys that vary among the kept runs, except replicate keys (seed), and
    without a key fixed by another (``lr`` set per ``optimizer``: one factor, see
    :func:`jacspec.zoo.rank.grid.distinct_factors`; the settings' ``aliased`` names them).
    ``bootstrap``, ``seed``, ``level``: intervals, see :func:`score_metrics`.
    """
    with Store(path, readonly=True) as store:
        df = store.runs(status="done")
        keys = sorted({k for c in store.configs().values() for k in c})
    if df.empty:
        raise ValueError(f"store {path} has no finished runs to score")
    df = select_runs(df, where=where, converged=converged, keys=keys)
    if df.empty:
        raise ValueError(f"store {path}: no finished run matches where={dict(where or {})} "
                         f"converged={converged}")
    aliased: dict[str, str] = {}
    if factors is None:
        factors, aliased = distinct_factors(
            df, [k for k in varying_columns(df, keys) if k not in REPLICATE_KEYS])
    if metrics is None:
        metrics = metric_columns(df, keys, exclude=[gap, *NON_PREDICTORS])
    selection = {"where": jsonable(dict(where or {})), "converged": bool(converged),
                 "aliased": aliased}
    return score_metrics(df, metrics, factors, gap=gap, noise=noise, paired=default_paired(df),
                         bootstrap=bootstrap, seed=seed, level=level, selection=selection)


def summarize_best(table: ScoreTable) -> Mapping[str, Any]:
    """The best metric's scores (by |tau|)."""
    if table.best is None:
        return {}
    return {"metric": table.best, **{k: v for k, v in table.scores[table.best].items()
                                     if not isinstance(v, dict)}}
