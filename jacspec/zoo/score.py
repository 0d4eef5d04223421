"""Rank statistics that judge a generalization metric against the generalization gap.

Over a zoo of trained networks with gap ``g`` and metric ``mu`` (higher metric is meant to
predict a larger gap):

- Kendall's tau as Jiang et al. (2020) define it (:func:`kendall_tau_a`):
  ``tau = sum_{i != j} sign(mu_i - mu_j) sign(g_i - g_j) / (n (n - 1))``, ties count 0; the
  score table also reports scipy's tau-b (:func:`kendall_tau`) as ``kendall_tau_b``.
- Granulated Kendall Psi (Jiang et al. 2020): for each factor ``i``, ``psi_i`` is the mean of
  that tau over the groups of models where only factor ``i`` varies; ``Psi = mean_i psi_i``.
- PGDL conditional mutual information, as the competition's scoring program computes it
  (:func:`jacspec.zoo.pgdl.conditional_mutual_information`; needs a complete grid with one
  model per configuration).
- Robust sign error (Dziugaite et al. 2020): environments are pairs of configurations that
  differ in one factor (their runs matched by seed); an environment's sign error is the mean
  of ``(1 - sign(d mu) sign(d g)) / 2`` over its runs; environments whose mean gap difference
  is within the noise do not count; the robust value is the supremum over environments.
  :func:`worst_factor_sign_error` is the milder statistic this module used to call by that
  name: the largest per-factor mean of the pair errors.
- Paired comparisons (Novak et al. 2018): models equal except one factor, value a vs value b.

The grid helpers (varying keys, group codes, single-factor pairs) live in
:mod:`jacspec.zoo.grid`; they and the CMI are re-exported here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from jacspec._util.json import jsonable
from jacspec.zoo.grid import (
    REPLICATE_KEYS,
    distinct_factors,
    group_codes,
    is_complete_grid,
    is_unique_grid,
    select_runs,
    single_factor_pairs,
    varying_columns,
)
from jacspec.zoo.pgdl import conditional_mutual_information, replicate_cmi

logger = logging.getLogger(__name__)

__all__ = [
    "NON_PREDICTORS", "REPLICATE_KEYS", "ScoreTable", "conditional_mutual_information",
    "default_paired", "gap_noise", "granulated_kendall", "is_complete_grid", "is_unique_grid",
    "kendall_tau", "kendall_tau_a", "metric_columns", "paired_comparison",
    "robust_sign_error", "score_metrics", "score_store", "select_runs", "single_factor_pairs",
    "summarize_best", "varying_columns", "worst_factor_sign_error",
]

# Quantities that use the test labels, define the gap or describe training: never predictors.
NON_PREDICTORS = ("gap", "loss_gap", "train_accuracy", "test_accuracy", "train_loss",
                  "test_loss", "epochs", "steps", "train_seconds", "converged", "full_batch",
                  "duration", "attempts")


def _pair_signs(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """``sign(x_i - x_j)`` and ``sign(y_i - y_j)`` over the pairs ``i < j`` of the points finite
    in both (None when fewer than two remain); a ValueError when the lengths differ."""
    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length, got {x.size} and {y.size}")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size < 2:
        return None
    iu = np.triu_indices(x.size, k=1)
    return np.sign(x[:, None] - x[None, :])[iu], np.sign(y[:, None] - y[None, :])[iu]


def kendall_tau(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Kendall's tau-b of ``x`` and ``y`` (pairs with NaN in either are dropped).

    ``tau_b = (C - D) / sqrt((n0 - T_x)(n0 - T_y))`` with ``n0 = n(n-1)/2`` and ``T`` the tied
    pairs; NaN when fewer than two points or one side is constant.
    """
    signs = _pair_signs(x, y)
    if signs is None:
        return float("nan")
    sx, sy = signs
    n0 = sx.size
    tx, ty = np.count_nonzero(sx == 0), np.count_nonzero(sy == 0)
    denom = np.sqrt(float(n0 - tx) * float(n0 - ty))
    if denom == 0:
        return float("nan")
    return float(np.sum(sx * sy) / denom)


def kendall_tau_a(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Jiang et al.'s (2020) Kendall tau (Kendall's tau-a); pairs with NaN are dropped.

    ``tau = sum_{i != j} sign(x_i - x_j) sign(y_i - y_j) / (n (n - 1))``: a tie in either
    variable contributes 0 and the denominator counts every pair, so a constant ``x`` gives 0.
    NaN when fewer than two points.
    """
    signs = _pair_signs(x, y)
    if signs is None:
        return float("nan")
    sx, sy = signs
    return float(np.sum(sx * sy) / sx.size)  # 2 sum_{i<j} / (n (n - 1)) = mean over i < j



def group_taus(df: pd.DataFrame, metric: str, factors: Sequence[str], *, gap: str = "gap",
               replicates: Sequence[str] = REPLICATE_KEYS) -> dict[str, np.ndarray]:
    """For each factor ``i``: :func:`kendall_tau_a` of every group of two or more models where
    only factor ``i`` varies (every other factor and every varying replicate key fixed)."""
    reps = varying_columns(df, replicates)
    out: dict[str, np.ndarray] = {}
    for f in factors:
        others = [c for c in factors if c != f] + reps
        taus = [kendall_tau_a(grp[metric], grp[gap])
                for _, grp in df.groupby(group_codes(df, others))]
        out[f] = np.asarray([t for t in taus if np.isfinite(t)], dtype=np.float64)
    return out


def granulated_kendall(df: pd.DataFrame, metric: str, factors: Sequence[str], *,
                       gap: str = "gap", replicates: Sequence[str] = REPLICATE_KEYS
                       ) -> tuple[float, dict[str, float]]:
    """Granulated Kendall ``Psi`` (Jiang et al. 2020) and the per-factor ``psi_i``.

    ``psi_i`` is the mean of :func:`kendall_tau_a` over the groups where only factor ``i``
    varies (every other factor and every varying replicate key fixed; :func:`group_taus`);
    ties count 0, so a group whose metric or gap is all tied contributes tau = 0.
    ``Psi = mean_i psi_i`` over every factor. Groups of a single model have no pair and are
    not groups of the grid; a factor with no group of two models (only on incomplete grids)
    gets NaN and is left out of ``Psi``.
    """
    per = {f: float(t.mean()) if t.size else float("nan")
           for f, t in group_taus(df, metric, factors, gap=gap, replicates=replicates).items()}
    vals = [v for v in per.values() if np.isfinite(v)]
    return (float(np.mean(vals)) if vals else float("nan")), per


def gap_noise(df: pd.DataFrame, factors: Sequence[str], *, gap: str = "gap",
              replicates: Sequence[str] = REPLICATE_KEYS) -> float:
    """Noise level of the gap: mean absolute gap difference between replicates (models equal
    in every factor, differing only in a replicate key such as the seed); 0 if none."""
    reps = varying_columns(df, replicates)
    if not reps:
        return 0.0
    diffs = []
    for _, grp in df.groupby(group_codes(df, list(factors))):
        v = grp[gap].dropna().to_numpy(float)
        if v.size > 1:
            diffs.append(np.abs(v[:, None] - v[None, :])[np.triu_indices(v.size, 1)])
    return float(np.mean(np.concatenate(diffs))) if diffs else 0.0



def _pair_sign_errors(df: pd.DataFrame, metric: str, factor: str, factors: Sequence[str], *,
                      gap: str, replicates: Sequence[str]
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For the pairs of runs equal except ``factor`` (matched on replicate keys): the
    environment code of each pair (its two configurations), ``d g`` and the pair's sign
    error ``(1 - sign(d mu) sign(d g)) / 2``; pairs with a non-finite value dropped."""
    a, b = single_factor_pairs(df, factor, factors, replicates=replicates)
    mu, g = df[metric].to_numpy(float), df[gap].to_numpy(float)
    dg, dm = g[b] - g[a], mu[b] - mu[a]
    ok = np.isfinite(dg) & np.isfinite(dm)
    conf = group_codes(df, list(factors))
    lo, hi = np.minimum(conf[a], conf[b]), np.maximum(conf[a], conf[b])
    env = lo * (int(conf.max()) + 1) + hi if conf.size else lo
    # orient every pair the same way within its environment (from config lo to config hi)
    flip = np.where(conf[a] <= conf[b], 1.0, -1.0)
    err = (1.0 - np.sign(dm) * np.sign(dg)) / 2.0
    return env[ok], (flip * dg)[ok], err[ok]


def environment_errors(df: pd.DataFrame, metric: str, factors: Sequence[str], *,
                       gap: str = "gap", noise: float,
                       replicates: Sequence[str] = REPLICATE_KEYS) -> dict[str, np.ndarray]:
    """For each factor ``f``: the sign error of every counted environment that varies ``f``
    (a pair of configurations differing in ``f`` only; its error is the mean of
    ``(1 - sign(d mu) sign(d g)) / 2`` over its run pairs matched by replicate key; counted
    when ``|mean d g| > noise``)."""
    d = df.reset_index(drop=True)
    out: dict[str, np.ndarray] = {}
    for f in factors:
        env, dg, err = _pair_sign_errors(d, metric, f, factors, gap=gap, replicates=replicates)
        if env.size == 0:
            out[f] = np.zeros(0)
            continue
        _, inv = np.unique(env, return_inverse=True)
        count = np.bincount(inv)
        mean_dg = np.bincount(inv, weights=dg) / count
        mean_err = np.bincount(inv, weights=err) / count
        out[f] = mean_err[np.abs(mean_dg) > noise]
    return out


def robust_sign_error(df: pd.DataFrame, metric: str, factors: Sequence[str], *,
                      gap: str = "gap", noise: float | None = None,
                      replicates: Sequence[str] = REPLICATE_KEYS
                      ) -> tuple[float, dict[str, float]]:
    """Dziugaite et al.'s (2020) robust sign error and its value for each factor.

    An environment is a pair of configurations that differ in exactly one factor; its runs
    are paired by replicate key (seed). Its sign error is the mean over its run pairs of
    ``(1 - sign(d mu) sign(d g)) / 2`` (0 agree, 1 disagree, 1/2 metric tie). Environments
    whose mean gap difference satisfies ``|mean d g| <= noise`` do not count (their gaps are
    not told apart). The robust value is the supremum (max) over the counted environments;
    the value for factor ``f`` is the supremum over those that vary ``f``
    (:func:`environment_errors`). ``noise=None`` uses :func:`gap_noise` (from seed
    replicates; 0 without them, so only exactly tied gaps are dropped). NaN when no
    environment counts.
    """
    noise = _noise(df, factors, gap, replicates, noise)
    errors = environment_errors(df, metric, factors, gap=gap, noise=noise,
                                replicates=replicates)
    per = {f: float(e.max()) if e.size else float("nan") for f, e in errors.items()}
    return _max_finite(per), per


def _noise(df: pd.DataFrame, factors: Sequence[str], gap: str, replicates: Sequence[str],
           noise: float | None) -> float:
    """``noise``, or :func:`gap_noise` when None; a ValueError unless finite and >= 0."""
    if noise is None:
        noise = gap_noise(df, factors, gap=gap, replicates=replicates)
    if not np.isfinite(noise) or noise < 0:
        raise ValueError(f"noise must be a finite non-negative gap difference, got {noise}")
    return float(noise)


def _max_finite(per: dict[str, float]) -> float:
    """The largest finite value of ``per`` (NaN when none is finite)."""
    vals = [v for v in per.values() if np.isfinite(v)]
    return float(max(vals)) if vals else float("nan")


def worst_factor_sign_error(df: pd.DataFrame, metric: str, factors: Sequence[str], *,
                            gap: str = "gap", noise: float | None = None,
                            replicates: Sequence[str] = REPLICATE_KEYS
                            ) -> tuple[float, dict[str, float]]:
    """Largest per-factor mean sign error and the per-factor means (not Dziugaite et al.'s
    supremum over environments: see :func:`robust_sign_error`).

    For factor ``f``, the mean of ``(1 - sign(d mu) sign(d g)) / 2`` over the run pairs that
    differ in ``f`` only (matched on replicate keys) with ``|d g| > noise``;
    ``noise=None`` uses :func:`gap_noise`.
    """
    noise = _noise(df, factors, gap, replicates, noise)
    d = df.reset_index(drop=True)
    per: dict[str, float] = {}
    for f in factors:
        _, dg, err = _pair_sign_errors(d, metric, f, factors, gap=gap, replicates=replicates)
        err = err[np.abs(dg) > noise]
        per[f] = float(err.mean()) if err.size else float("nan")
    return _max_finite(per), per


def paired_comparison(df: pd.DataFrame, metric: str, factor: str, a: Any, b: Any,
                      factors: Sequence[str], *, gap: str = "gap",
                      replicates: Sequence[str] = REPLICATE_KEYS) -> dict[str, Any]:
    """Models equal except ``factor`` (value ``a`` vs ``b``): mean differences ``b - a`` of
    gap and metric, and the share of pairs where the metric is larger under ``b``."""
    d = df.reset_index(drop=True)
    fa, fb = d[factor].astype(str) == str(a), d[factor].astype(str) == str(b)
    pa, pb = single_factor_pairs(d, factor, factors, replicates=replicates)
    first_a = fa.to_numpy()[pa] & fb.to_numpy()[pb]
    first_b = fb.to_numpy()[pa] & fa.to_numpy()[pb]
    ia = np.concatenate([pa[first_a], pb[first_b]])
    ib = np.concatenate([pb[first_a], pa[first_b]])
    g, mu = d[gap].to_numpy(float), d[metric].to_numpy(float)
    dg, dm = g[ib] - g[ia], mu[ib] - mu[ia]
    ok = np.isfinite(dg) & np.isfinite(dm)
    dg, dm = dg[ok], dm[ok]
    return {"factor": factor, "a": a, "b": b, "metric": metric, "pairs": int(dg.size),
            "gap_diff": float(dg.mean()) if dg.size else float("nan"),
            "metric_diff": float(dm.mean()) if dm.size else float("nan"),
            "metric_larger_b": float(np.mean(dm > 0)) if dm.size else float("nan"),
            "sign_agreement": float(np.mean(np.sign(dm) == np.sign(dg))) if dg.size
            else float("nan")}


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
    (:func:`jacspec.zoo.intervals.score_intervals`). ``selection`` (which runs ``df`` holds)
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
            from jacspec.zoo.intervals import score_intervals

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
        values = set(df["batch_size"].astype(str))
        sizes = sorted(int(v) for v in values if v.isdigit())
        if sizes and "full" in values:
            wanted.append(("batch_size", sizes[0], "full"))
        elif len(sizes) > 1:
            wanted.append(("batch_size", sizes[0], sizes[-1]))
    out = []
    for f, a, b in wanted:
        if f in df:
            vals = set(df[f].astype(str))
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
    :func:`jacspec.zoo.grid.distinct_factors`; the settings' ``aliased`` names them).
    ``bootstrap``, ``seed``, ``level``: intervals, see :func:`score_metrics`.
    """
    from jacspec.zoo.store import Store

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
