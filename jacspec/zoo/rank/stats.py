"""Rank statistics of one generalization metric against the generalization gap.

Over a zoo of trained networks with gap ``g`` and metric ``mu`` (higher metric is meant to
predict a larger gap):

- Kendall's tau as Jiang et al. (2020) define it (:func:`kendall_tau_a`):
  ``tau = sum_{i != j} sign(mu_i - mu_j) sign(g_i - g_j) / (n (n - 1))``, ties count 0;
  scipy's tau-b is :func:`kendall_tau`.
- Granulated Kendall Psi (Jiang et al. 2020): for each factor ``i``, ``psi_i`` is the mean of
  that tau over the groups of models where only factor ``i`` varies; ``Psi = mean_i psi_i``.
- Robust sign error (Dziugaite et al. 2020): environments are pairs of configurations that
  differ in one factor (their runs matched by seed); an environment's sign error is the mean
  of ``(1 - sign(d mu) sign(d g)) / 2`` over its runs; environments whose mean gap difference
  is within the noise do not count; the robust value is the supremum over environments.
  :func:`worst_factor_sign_error` is the milder statistic: the largest per-factor mean of the
  pair errors.
- Paired comparisons (Novak et al. 2018): models equal except one factor, value a vs value b.

The score table of every metric (:func:`jacspec.zoo.rank.score.score_metrics`) and the
bootstrap intervals (:mod:`jacspec.zoo.rank.intervals`) are built from these.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from jacspec.zoo.rank.grid import (
    REPLICATE_KEYS,
    as_text,
    group_codes,
    single_factor_pairs,
    varying_columns,
)

__all__ = [
    "environment_errors", "gap_noise", "granulated_kendall", "group_taus", "kendall_tau",
    "kendall_tau_a", "paired_comparison", "robust_sign_error", "worst_factor_sign_error",
]


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
    fa, fb = as_text(d[factor]) == str(a), as_text(d[factor]) == str(b)
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
