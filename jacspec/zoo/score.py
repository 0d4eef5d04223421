"""Rank statistics that judge a generalization metric against the generalization gap.

Over a zoo of trained networks with gap ``g`` and metric ``mu`` (higher metric is meant to
predict a larger gap):

- Kendall's tau-b over all models.
- Granulated Kendall Psi (Jiang et al. 2020): for each factor ``i``, ``psi_i`` is the mean of
  tau within groups of models where only factor ``i`` varies; ``Psi = mean_i psi_i``.
- PGDL conditional mutual information: over ordered pairs of distinct models,
  ``V_g = [g_a > g_b]``, ``V_mu = [mu_a > mu_b]``; for a conditioning set ``S`` of factors,
  ``U_S`` is the pair of values each model has for the factors in ``S``;
  ``CMI = min_S I(V_mu; V_g | U_S) / H(V_g | U_S)`` over all ``S`` of size 2 (complete grids).
- Robust sign error (Dziugaite et al. 2020): over pairs differing in one factor only whose gap
  difference exceeds the noise, the share of pairs where ``sign(d mu) != sign(d g)``; the
  robust value is the worst factor's mean.
- Paired comparisons (Novak et al. 2018): models equal except one factor, value a vs value b.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

REPLICATE_KEYS = ("seed",)

# Quantities that use the test labels, define the gap or describe training: never predictors.
NON_PREDICTORS = ("gap", "loss_gap", "train_accuracy", "test_accuracy", "train_loss",
                  "test_loss", "epochs", "steps", "train_seconds", "converged", "full_batch",
                  "duration", "attempts")


def _vec(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64).ravel()
    return arr


def kendall_tau(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Kendall's tau-b of ``x`` and ``y`` (pairs with NaN in either are dropped).

    ``tau_b = (C - D) / sqrt((n0 - T_x)(n0 - T_y))`` with ``n0 = n(n-1)/2`` and ``T`` the tied
    pairs; NaN when fewer than two points or one side is constant.
    """
    x, y = _vec(x, "x"), _vec(y, "y")
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length, got {x.size} and {y.size}")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = x.size
    if n < 2:
        return float("nan")
    iu = np.triu_indices(n, k=1)
    sx = np.sign(x[:, None] - x[None, :])[iu]
    sy = np.sign(y[:, None] - y[None, :])[iu]
    n0 = sx.size
    tx, ty = np.count_nonzero(sx == 0), np.count_nonzero(sy == 0)
    denom = np.sqrt(float(n0 - tx) * float(n0 - ty))
    if denom == 0:
        return float("nan")
    return float(np.sum(sx * sy) / denom)


def varying_columns(df: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    """Columns among ``columns`` that take more than one value in ``df``."""
    return [c for c in columns if c in df and df[c].astype(str).nunique() > 1]


def _keys(df: pd.DataFrame, cols: Sequence[str]) -> np.ndarray:
    """Integer code per row for the combination of values in ``cols`` (0 if no columns)."""
    if not cols:
        return np.zeros(len(df), dtype=np.int64)
    frame = df[list(cols)].astype(str)
    return frame.groupby(list(cols), sort=True).ngroup().to_numpy()


def granulated_kendall(df: pd.DataFrame, metric: str, factors: Sequence[str], *,
                       gap: str = "gap", replicates: Sequence[str] = REPLICATE_KEYS
                       ) -> tuple[float, dict[str, float]]:
    """Granulated Kendall ``Psi`` and the per-factor ``psi_i`` (NaN groups are skipped).

    Groups for factor ``i`` hold every other factor and every replicate key fixed.
    """
    reps = varying_columns(df, replicates)
    per: dict[str, float] = {}
    for f in factors:
        others = [c for c in factors if c != f] + reps
        taus = []
        for _, grp in df.groupby(_keys(df, others)):
            t = kendall_tau(grp[metric], grp[gap])
            if np.isfinite(t):
                taus.append(t)
        per[f] = float(np.mean(taus)) if taus else float("nan")
    vals = [v for v in per.values() if np.isfinite(v)]
    return (float(np.mean(vals)) if vals else float("nan")), per


def is_complete_grid(df: pd.DataFrame, factors: Sequence[str]) -> bool:
    """Whether every combination of the factors' observed values occurs at least once."""
    if not factors:
        return len(df) > 0
    sizes = [df[f].astype(str).nunique() for f in factors]
    return int(df[list(factors)].astype(str).drop_duplicates().shape[0]) == int(np.prod(sizes))


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-np.sum(p * np.log2(p)))


def _mutual_information(table: np.ndarray) -> float:
    """I(A; B) in bits of a 2-D contingency table of counts."""
    total = table.sum()
    if total == 0:
        return 0.0
    pj = table / total
    pa, pb = pj.sum(axis=1, keepdims=True), pj.sum(axis=0, keepdims=True)
    nz = pj > 0
    return float(np.sum(pj[nz] * np.log2(pj[nz] / (pa @ pb)[nz])))


def conditional_mutual_information(df: pd.DataFrame, metric: str, factors: Sequence[str], *,
                                   gap: str = "gap", size: int = 2,
                                   require_complete: bool = True) -> tuple[float, dict[str, float]]:
    """PGDL score ``min_S I(V_mu; V_g | U_S) / H(V_g | U_S)`` over factor sets ``|S| = size``.

    Conditional quantities are ``sum_u p(u) I_u`` and ``sum_u p(u) H_u`` over cells ``u`` of
    value pairs. Returns the score and the value for each ``S`` (key ``"f1,f2"``). NaN (with a
    log note) when the grid is incomplete and ``require_complete``.
    """
    factors = list(factors)
    if require_complete and not is_complete_grid(df, factors):
        logger.info("CMI skipped: the grid over %s is not complete", factors)
        return float("nan"), {}
    d = df[[metric, gap] + factors].dropna(subset=[metric, gap])
    n = len(d)
    if n < 2:
        return float("nan"), {}
    mu, g = d[metric].to_numpy(float), d[gap].to_numpy(float)
    a, b = np.nonzero(~np.eye(n, dtype=bool))
    vg = (g[a] > g[b]).astype(np.int64)
    vm = (mu[a] > mu[b]).astype(np.int64)
    codes = {f: _keys(d, [f]) for f in factors}
    k = min(size, len(factors))
    per: dict[str, float] = {}
    for subset in itertools.combinations(factors, k):
        cell = np.zeros(a.size, dtype=np.int64)
        for f in subset:
            c = codes[f]
            m = int(c.max()) + 1
            cell = (cell * m + c[a]) * m + c[b]
        _, cell = np.unique(cell, return_inverse=True)
        table = np.zeros((cell.max() + 1, 2, 2))
        np.add.at(table, (cell, vg, vm), 1.0)
        weights = table.sum(axis=(1, 2)) / a.size
        mi = sum(w * _mutual_information(t) for w, t in zip(weights, table, strict=True))
        h = sum(w * _entropy(t.sum(axis=1)) for w, t in zip(weights, table, strict=True))
        per[",".join(subset)] = float(mi / h) if h > 0 else float("nan")
    vals = [v for v in per.values() if np.isfinite(v)]
    return (float(min(vals)) if vals else float("nan")), per


def gap_noise(df: pd.DataFrame, factors: Sequence[str], *, gap: str = "gap",
              replicates: Sequence[str] = REPLICATE_KEYS) -> float:
    """Noise level of the gap: mean absolute gap difference between replicates (models equal
    in every factor, differing only in a replicate key such as the seed); 0 if none."""
    reps = varying_columns(df, replicates)
    if not reps:
        return 0.0
    diffs = []
    for _, grp in df.groupby(_keys(df, list(factors))):
        v = grp[gap].dropna().to_numpy(float)
        if v.size > 1:
            diffs.append(np.abs(v[:, None] - v[None, :])[np.triu_indices(v.size, 1)])
    return float(np.mean(np.concatenate(diffs))) if diffs else 0.0


def single_factor_pairs(df: pd.DataFrame, factor: str, factors: Sequence[str], *,
                        replicates: Sequence[str] = REPLICATE_KEYS
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Row positions ``(a, b)``, ``a < b``, of all pairs equal in every factor and replicate
    key except ``factor``, where they differ."""
    others = [c for c in factors if c != factor] + varying_columns(df, replicates)
    key = _keys(df, others)
    val = _keys(df, [factor])
    same = key[:, None] == key[None, :]
    diff = val[:, None] != val[None, :]
    a, b = np.nonzero(np.triu(same & diff, k=1))
    return a, b


def robust_sign_error(df: pd.DataFrame, metric: str, factors: Sequence[str], *,
                      gap: str = "gap", noise: float | None = None,
                      replicates: Sequence[str] = REPLICATE_KEYS
                      ) -> tuple[float, dict[str, float]]:
    """Worst single-factor mean sign error and the per-factor means.

    Pair error ``(1 - sign(d mu) sign(d g)) / 2`` (0 agree, 1 disagree, 1/2 metric tie) over
    pairs differing in one factor with ``|d g| > noise``; ``noise=None`` uses
    :func:`gap_noise`.
    """
    if noise is None:
        noise = gap_noise(df, factors, gap=gap, replicates=replicates)
    if noise < 0:
        raise ValueError(f"noise must be non-negative, got {noise}")
    d = df.reset_index(drop=True)
    mu, g = d[metric].to_numpy(float), d[gap].to_numpy(float)
    per: dict[str, float] = {}
    for f in factors:
        a, b = single_factor_pairs(d, f, factors, replicates=replicates)
        dg, dm = g[b] - g[a], mu[b] - mu[a]
        keep = (np.abs(dg) > noise) & np.isfinite(dg) & np.isfinite(dm)
        err = (1.0 - np.sign(dm[keep]) * np.sign(dg[keep])) / 2.0
        per[f] = float(err.mean()) if err.size else float("nan")
    vals = [v for v in per.values() if np.isfinite(v)]
    return (float(max(vals)) if vals else float("nan")), per


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

    def to_frame(self) -> pd.DataFrame:
        rows = [{"metric": name, **{k: v for k, v in s.items() if not isinstance(v, dict)}}
                for name, s in self.scores.items()]
        return pd.DataFrame(rows).set_index("metric") if rows else pd.DataFrame()

    def to_dict(self) -> dict[str, Any]:
        def clean(v: Any) -> Any:
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            if isinstance(v, (float, np.floating)):
                return float(v) if np.isfinite(v) else None
            if isinstance(v, np.integer):
                return int(v)
            return v

        return {"metrics": clean(self.scores), "factors": list(self.factors), "gap": self.gap,
                "num_models": self.num_models, "complete_grid": self.complete_grid,
                "noise": clean(self.noise), "best": self.best,
                "paired": [clean(p) for p in self.paired]}


def score_metrics(df: pd.DataFrame, metrics: Sequence[str], factors: Sequence[str], *,
                  gap: str = "gap", noise: float | None = None,
                  paired: Sequence[tuple[str, Any, Any]] = ()) -> ScoreTable:
    """Kendall tau, Psi, CMI and robust sign error of every metric against ``gap``.

    ``best`` is the metric with the largest ``|tau|`` (ties: larger Psi magnitude).
    ``paired`` lists ``(factor, a, b)`` comparisons, each made for every metric.
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
        cmi, per_cmi = (conditional_mutual_information(sub, m, factors, gap=gap)
                        if complete and len(sub) == len(df) else (float("nan"), {}))
        rse, per_rse = robust_sign_error(sub, m, factors, gap=gap, noise=noise)
        scores[m] = {"kendall_tau": kendall_tau(sub[m], sub[gap]), "psi": psi, "cmi": cmi,
                     "robust_sign_error": rse, "num_models": int(len(sub)),
                     "psi_per_factor": per_psi, "cmi_per_set": per_cmi,
                     "sign_error_per_factor": per_rse}
    finite = [(abs(s["kendall_tau"]), abs(s["psi"]) if np.isfinite(s["psi"]) else 0.0, m)
              for m, s in scores.items() if np.isfinite(s["kendall_tau"])]
    best = max(finite)[2] if finite else None
    pairs = tuple(paired_comparison(df, m, f, a, b, factors, gap=gap)
                  for (f, a, b) in paired if f in df for m in metrics)
    return ScoreTable(scores=scores, factors=tuple(factors), gap=gap, num_models=len(df),
                      complete_grid=complete, noise=float(noise), best=best, paired=pairs)


def default_paired(df: pd.DataFrame) -> list[tuple[str, Any, Any]]:
    """Novak et al.'s comparisons present in ``df``: true vs random labels, augmentation off
    vs on, ReLU vs hard-sigmoid, smallest minibatch vs ``batch_size="full"`` (``a`` is the
    setting the paper found to generalize better, except for the activations)."""
    wanted: list[tuple[str, Any, Any]] = [
        ("random_labels", False, True), ("augment", True, False),
        ("activation", "relu", "hard_sigmoid")]
    if "batch_size" in df:
        sizes = sorted(int(v) for v in set(df["batch_size"].astype(str)) if v.isdigit())
        if sizes:
            wanted.append(("batch_size", sizes[0], "full"))
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
                noise: float | None = None) -> ScoreTable:
    """Score every metric of the finished runs in the store at ``path``.

    ``factors`` default: configuration keys that vary, except replicate keys (seed).
    """
    from jacspec.zoo.store import Store

    with Store(path, readonly=True) as store:
        df = store.runs(status="done")
        keys = sorted({k for c in store.configs().values() for k in c})
    if df.empty:
        raise ValueError(f"store {path} has no finished runs to score")
    if factors is None:
        factors = [k for k in varying_columns(df, keys) if k not in REPLICATE_KEYS]
    if metrics is None:
        metrics = metric_columns(df, keys, exclude=[gap, *NON_PREDICTORS])
    return score_metrics(df, metrics, factors, gap=gap, noise=noise, paired=default_paired(df))


def summarize_best(table: ScoreTable) -> Mapping[str, Any]:
    """The best metric's scores (by |tau|)."""
    if table.best is None:
        return {}
    return {"metric": table.best, **{k: v for k, v in table.scores[table.best].items()
                                     if not isinstance(v, dict)}}
