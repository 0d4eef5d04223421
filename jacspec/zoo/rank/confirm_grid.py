"""The statistics of study 2 that read the grid of factors within each family
(``docs/results/mnist_study2.md``, §1.4 and §6): Psi within strata of the norm, the
distribution of environment sign errors, and PGDL's CMI on random draws of one converged
seed per configuration. :mod:`jacspec.zoo.rank.confirm` puts them in its table.

Every function takes a frame of converged networks, a ``family`` column (pairs across
families never count), candidate ``factors`` (within a family, those that vary there on their
own: :func:`jacspec.zoo.rank.grid.distinct_factors`) and the ``seed`` column.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from jacspec._util.random import numpy_generator
from jacspec.zoo.rank.grid import (
    as_text,
    distinct_factors,
    group_codes,
    single_factor_pairs,
    varying_columns,
)
from jacspec.zoo.rank.pgdl import mutual_information, pgdl_entropy
from jacspec.zoo.rank.stats import environment_errors, gap_noise

__all__ = ["converged_cmi", "family_factors", "psi_within_strata", "sign_error_summary",
           "z_strata"]


def _check(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame]
    if missing:
        raise ValueError(f"{what}: columns {missing} are not in the frame; it has "
                         f"{', '.join(map(str, frame.columns))}")


def family_factors(frame: pd.DataFrame, factors: Sequence[str], *, family: str = "model",
                   seed: str = "seed") -> dict[str, list[str]]:
    """``{family value: its factors}``: the keys of ``factors`` (never ``family`` or
    ``seed``) that vary within that family on their own (a key fixed by another is dropped,
    :func:`jacspec.zoo.rank.grid.distinct_factors`)."""
    _check(frame, [family], "family")
    out: dict[str, list[str]] = {}
    for fam, sub in frame.groupby(as_text(frame[family]), sort=True):
        cand = varying_columns(sub, [f for f in factors if f not in (family, seed)])
        out[str(fam)] = distinct_factors(sub, cand)[0]
    return out


def z_strata(z: Any, families: Any, strata: int = 5) -> np.ndarray:
    """Stratum ``0..strata-1`` of every network: the quantiles of ``z`` computed within its
    family over the networks with a finite ``z`` (right-closed bins as ``pandas.qcut``,
    numpy's linear quantiles); -1 where ``z`` is not finite."""
    if not isinstance(strata, (int, np.integer)) or isinstance(strata, bool) or strata < 1:
        raise ValueError(f"strata must be a positive number of bins, got {strata!r}")
    z = np.asarray(z, dtype=np.float64).ravel()
    fam = np.asarray(families).astype(str).ravel()
    out = np.full(z.size, -1, dtype=np.int64)
    for f in np.unique(fam):
        idx = np.flatnonzero((fam == f) & np.isfinite(z))
        if idx.size == 0:
            continue
        edges = np.quantile(z[idx], np.arange(1, strata) / strata)
        out[idx] = np.digitize(z[idx], edges, right=True)
    return out


def _factor_pairs(frame: pd.DataFrame, fam_factors: Mapping[str, list[str]], family: str,
                  seed: str) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """``(family, factor, a, b)``: global row positions of the pairs equal in every other
    factor and the seed, differing in ``factor`` (one pair per group for two-level
    factors)."""
    d = frame.reset_index(drop=True)
    famcol = as_text(d[family]).to_numpy()
    out = []
    for fam, factors in fam_factors.items():
        rows = np.flatnonzero(famcol == fam)
        sub = d.iloc[rows].reset_index(drop=True)
        for f in factors:
            a, b = single_factor_pairs(sub, f, factors, replicates=(seed,))
            out.append((fam, f, rows[a], rows[b]))
    return out


def _interval(draws: np.ndarray | None, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the finite bootstrap draws (NaN, NaN when there are none)."""
    if draws is None or not np.isfinite(draws).any():
        return float("nan"), float("nan")
    lo, hi = np.nanquantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def psi_many(frame: pd.DataFrame, metrics: Sequence[str], masks: np.ndarray, *, gap: str,
             family: str, fam_factors: Mapping[str, list[str]], seed: str,
             stratum: np.ndarray | None, min_pairs: int, B: int,
             rng: np.random.Generator | None) -> dict[str, dict[str, Any]]:
    """Psi (``stratum=None``) or Psi within strata for every metric of ``metrics`` (column
    ``k`` of ``masks``: the networks it is scored on), with ``B`` bootstrap draws of the
    counted pairs within each factor and family (shared by the metrics)."""
    g = frame[gap].to_numpy(float)
    vals = np.column_stack([frame[m].to_numpy(float) for m in metrics]) if metrics else \
        np.zeros((len(frame), 0))
    cells = []  # per (family, factor): psi values, counts, bootstrap sums
    for fam, f, a, b in _factor_pairs(frame, fam_factors, family, seed):
        if stratum is not None:
            same = (stratum[a] == stratum[b]) & (stratum[a] >= 0)
            a, b = a[same], b[same]
        ok = masks[a] & masks[b]
        with np.errstate(invalid="ignore"):
            v = np.where(ok, np.sign(vals[a] - vals[b]) * np.sign(g[a] - g[b])[:, None], 0.0)
        n = ok.sum(axis=0)
        psi = np.where(n > 0, v.sum(axis=0) / np.maximum(n, 1), np.nan)
        boot = None
        if B and rng is not None and a.size:
            pick = rng.integers(0, a.size, (B, a.size))
            counts = np.zeros((B, a.size))
            np.add.at(counts, (np.repeat(np.arange(B), a.size), pick.ravel()), 1.0)
            with np.errstate(invalid="ignore", divide="ignore"):
                boot = (counts @ v) / (counts @ ok.astype(float))
        cells.append((fam, f, psi, n, boot))
    out: dict[str, dict[str, Any]] = {}
    fams = list(fam_factors)
    for k, name in enumerate(metrics):
        per_factor, thin, fam_vals, fam_draws = {}, [], {}, {}
        for fam in fams:
            kept = []
            for cf, f, psi, n, boot in cells:
                if cf != fam:
                    continue
                lo, hi = _interval(None if boot is None else boot[:, k])
                per_factor[f"{fam}:{f}"] = {"family": fam, "factor": f, "psi": float(psi[k]),
                                            "pairs": int(n[k]), "lo": lo, "hi": hi}
                if n[k] < min_pairs:
                    thin.append(f"{fam}:{f}")
                else:
                    kept.append((psi[k], None if boot is None else boot[:, k]))
            fam_vals[fam] = float(np.mean([p for p, _ in kept])) if kept else float("nan")
            if B:
                fam_draws[fam] = np.mean([d for _, d in kept], axis=0) if kept and all(
                    d is not None for _, d in kept) else np.full(B, np.nan)
        value = float(np.mean(list(fam_vals.values()))) if fams else float("nan")
        draws = np.mean(list(fam_draws.values()), axis=0) if B and fams else np.zeros(0)
        out[name] = {"value": value, "per_family": fam_vals, "per_factor": per_factor,
                     "thin": thin, "draws": draws}
    return out


def psi_within_strata(frame: pd.DataFrame, metric: str, *, z: str, factors: Sequence[str],
                      gap: str = "gap", family: str = "model", seed: str = "seed",
                      strata: int = 5, min_pairs: int = 10, B: int = 0,
                      rng: int | np.random.Generator | None = 19,
                      level: float = 0.95) -> dict[str, Any]:
    """Study 2's ``Psi_Z`` (§1.4): granulated Kendall Psi within strata of ``z``.

    Within each family the networks are cut into ``strata`` quantile bins of ``z``
    (:func:`z_strata`). For factor ``f``, a group holds the networks equal in every other
    factor and in the seed; its pairs count only if both networks lie in one stratum, each
    contributing ``sign(d metric) sign(d gap)`` (ties 0). ``psi_Z,f`` = mean over the
    counted pairs; a factor with fewer than ``min_pairs`` counted pairs is left out of its
    family's mean and named in ``thin``; a family's value is the mean over its factors and
    ``value`` the mean over the families. ``strata=1`` gives plain Psi over pairs.
    ``B > 0``: the counted pairs resampled within each factor and family ``B`` times with
    ``rng``; ``interval`` is the ``level`` percentile interval and ``q05``/``q95`` the
    one-sided 95% bounds. Networks with a non-finite metric, gap or ``z`` are left out.
    """
    _check(frame, [metric, z, gap, family, seed], "psi_within_strata")
    d = frame.reset_index(drop=True)
    mask = (np.isfinite(d[metric].to_numpy(float)) & np.isfinite(d[gap].to_numpy(float))
            & np.isfinite(d[z].to_numpy(float)))[:, None]
    stratum = z_strata(d[z].to_numpy(float), d[family], strata)
    gen = numpy_generator(rng) if B else None
    res = psi_many(d, [metric], mask, gap=gap, family=family,
                   fam_factors=family_factors(d, factors, family=family, seed=seed),
                   seed=seed, stratum=stratum, min_pairs=min_pairs, B=int(B), rng=gen)[metric]
    return {**res, **_bounds(res["draws"], level)}


def _bounds(draws: np.ndarray, level: float = 0.95) -> dict[str, float]:
    d = np.asarray(draws, dtype=np.float64)
    d = d[np.isfinite(d)]
    if not d.size:
        return {"lo": float("nan"), "hi": float("nan"), "q05": float("nan"),
                "q95": float("nan")}
    lo, hi, q05, q95 = np.quantile(d, [(1 - level) / 2, (1 + level) / 2, 0.05, 0.95])
    return {"lo": float(lo), "hi": float(hi), "q05": float(q05), "q95": float(q95)}


def sign_error_summary(frame: pd.DataFrame, metric: str, *, factors: Sequence[str],
                       gap: str = "gap", family: str = "model", seed: str = "seed",
                       mask: np.ndarray | None = None) -> dict[str, float]:
    """The distribution of Dziugaite et al.'s environment sign errors (study 2, §6).

    Environments are pairs of configurations of one family differing in one factor; an
    environment's error is the mean of ``(1 - sign(d mu) sign(d g)) / 2`` over its
    seed-matched pairs (:func:`jacspec.zoo.rank.score.environment_errors`), and it counts when
    ``|mean d g|`` exceeds its family's :func:`~jacspec.zoo.rank.score.gap_noise` (from every
    network of the family). Returns ``count``, ``mean``, ``p50``, ``p75``, ``p90`` and
    ``max`` (the robust value) of the counted environments pooled over families
    (``mask``: the networks to score, default those with a finite metric and gap).
    """
    _check(frame, [metric, gap, family, seed], "sign_error_summary")
    d = frame.reset_index(drop=True)
    fam_factors = family_factors(d, factors, family=family, seed=seed)
    return sign_errors(d, metric, gap=gap, family=family, seed=seed, fam_factors=fam_factors,
                       noise=family_noise(d, fam_factors, gap=gap, family=family, seed=seed),
                       mask=mask)


def family_noise(d: pd.DataFrame, fam_factors: Mapping[str, list[str]], *, gap: str,
                 family: str, seed: str) -> dict[str, float]:
    """Each family's :func:`~jacspec.zoo.rank.score.gap_noise` over all its networks."""
    return {fam: gap_noise(d[as_text(d[family]) == fam], fs, gap=gap, replicates=(seed,))
            for fam, fs in fam_factors.items()}


def sign_errors(d: pd.DataFrame, metric: str, *, gap: str, family: str, seed: str,
                fam_factors: Mapping[str, list[str]], noise: Mapping[str, float],
                mask: np.ndarray | None) -> dict[str, float]:
    """Count, mean and quantiles of ``metric``'s environment sign errors, pooled over families."""
    keep = np.isfinite(d[metric].to_numpy(float)) & np.isfinite(d[gap].to_numpy(float))
    if mask is not None:
        keep &= np.asarray(mask, dtype=bool)
    famcol = as_text(d[family]).to_numpy()
    errs = []
    for fam, fs in fam_factors.items():
        part = d[(famcol == fam) & keep]
        errs += list(environment_errors(part, metric, fs, gap=gap, noise=noise[fam],
                                        replicates=(seed,)).values())
    e = np.concatenate(errs) if errs else np.zeros(0)
    if not e.size:
        return {"count": 0, **{k: float("nan") for k in ("mean", "p50", "p75", "p90", "max")}}
    p50, p75, p90 = np.quantile(e, [0.5, 0.75, 0.9])
    return {"count": int(e.size), "mean": float(e.mean()), "p50": float(p50),
            "p75": float(p75), "p90": float(p90), "max": float(e.max())}


def _cmi_batch(g: np.ndarray, mu: np.ndarray, cells: list[np.ndarray],
               ai: np.ndarray, bi: np.ndarray) -> np.ndarray:
    """PGDL's score for draws ``g`` ``(D, K)`` and ``mu`` ``(D, K, m)`` of one network per
    configuration: every ordered pair of configurations ``(ai, bi)`` (self-pairs included);
    ``cells[s]`` the cell of each pair for conditioning set ``s``. Returns ``(D, m)``: the
    minimum over the sets of ``mean_u I_u / mean_u H_u``."""
    D, _, m = mu.shape
    vg = (g[:, ai] > g[:, bi]).astype(np.float32)  # (D, P)
    vm = (mu[:, ai, :] > mu[:, bi, :]).astype(np.float32).transpose(0, 2, 1).copy()  # (D,m,P)
    both = vm * vg[:, None, :]
    best = np.full((D, m), np.inf)
    for cell in cells:
        nc = int(cell.max()) + 1
        onehot = np.zeros((cell.size, nc), dtype=np.float32)
        onehot[np.arange(cell.size), cell] = 1.0
        tot = onehot.sum(axis=0).astype(np.float64)  # (nc,)
        n_g = (vg @ onehot).astype(np.float64)  # (D, nc)
        n_m = (vm @ onehot).astype(np.float64).transpose(0, 2, 1)  # (D, nc, m)
        n_11 = (both @ onehot).astype(np.float64).transpose(0, 2, 1)
        n_g3 = np.broadcast_to(n_g[:, :, None], n_11.shape)
        t = np.stack([tot[None, :, None] - n_g3 - n_m + n_11, n_m - n_11,
                      n_g3 - n_11, n_11], axis=-1).reshape(-1, 2, 2)
        mi = mutual_information(t).reshape(D, nc, m).mean(axis=1)
        h = pgdl_entropy(np.stack([tot[None, :] - n_g, n_g], axis=-1)).mean(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            val = np.where(h[:, None] > 0, mi / h[:, None], np.nan)
        best = np.where(np.isfinite(val), np.minimum(best, val), best)
    return np.where(np.isfinite(best), best, np.nan)


def converged_cmi(frame: pd.DataFrame, metrics: str | Sequence[str], *, factors: Sequence[str],
                  gap: str = "gap", family: str = "model", seed: str = "seed", B: int = 2000,
                  rng: int | np.random.Generator | None = 19, masks: np.ndarray | None = None,
                  level: float = 0.95, chunk: int = 50,
                  fam_factors: Mapping[str, list[str]] | None = None
                  ) -> dict[str, dict[str, dict[str, Any]]]:
    """Study 2's CMI (§6): PGDL's conditional mutual information on random draws of one
    converged seed per configuration, per family.

    Each of the ``B`` draws picks, for every configuration of the family (a combination of
    its factors), one of its networks uniformly, so that every draw is a complete PGDL grid
    scored as :func:`jacspec.zoo.rank.pgdl.conditional_mutual_information` does (every ordered
    pair, self-pairs included; the minimum over pairs of factors of mean I / mean H). The
    value is the mean of the draws, ``lo``/``hi`` their ``level`` percentile interval. The
    score is undefined (NaN) when a configuration of the grid has no network to draw:
    ``missing`` says how many. ``masks`` ``(n, m)``: the networks each metric may use
    (default: a finite metric and gap). Returns ``{metric: {family: {...}}}``; the draws of
    all metrics are the same where their masks are.
    """
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    _check(frame, [*metrics, gap, family, seed], "converged_cmi")
    if not isinstance(B, (int, np.integer)) or isinstance(B, bool) or B < 1:
        raise ValueError(f"B must be a positive number of draws, got {B!r}")
    d = frame.reset_index(drop=True)
    g = d[gap].to_numpy(float)
    vals = np.column_stack([d[m].to_numpy(float) for m in metrics])
    if masks is None:
        masks = np.isfinite(vals) & np.isfinite(g)[:, None]
    gen = numpy_generator(rng)
    out: dict[str, dict[str, dict[str, Any]]] = {m: {} for m in metrics}
    famcol = as_text(d[family]).to_numpy()
    if fam_factors is None:
        fam_factors = family_factors(d, factors, family=family, seed=seed)
    for fam, fs in fam_factors.items():
        rows = np.flatnonzero(famcol == fam)
        sub = d.iloc[rows]
        conf = group_codes(sub, fs)
        K = int(conf.max()) + 1 if conf.size else 0
        full = int(np.prod([as_text(sub[f]).nunique() for f in fs])) if fs else 1
        first = np.array([np.flatnonzero(conf == c)[0] for c in range(K)], dtype=np.int64)
        codes = [group_codes(sub, [f])[first] for f in fs]
        ai, bi = (x.ravel() for x in np.meshgrid(np.arange(K), np.arange(K), indexing="ij"))
        cells = []
        for s in itertools.combinations(range(len(fs)), 2):
            cell = np.zeros(ai.size, dtype=np.int64)
            for f in s:
                c, mm = codes[f], int(codes[f].max()) + 1
                cell = (cell * mm + c[ai]) * mm + c[bi]
            cells.append(np.unique(cell, return_inverse=True)[1])
        # metrics sharing a mask share their draws
        fmask = masks[rows]
        keys = [fmask[:, k].tobytes() for k in range(len(metrics))]
        for key in dict.fromkeys(keys):
            cols = [k for k in range(len(metrics)) if keys[k] == key]
            avail = [rows[(conf == c) & fmask[:, cols[0]]] for c in range(K)]
            missing = full - sum(1 for a in avail if a.size)
            if missing or len(fs) < 2:
                for k in cols:
                    out[metrics[k]][fam] = {"value": float("nan"), "lo": float("nan"),
                                            "hi": float("nan"), "missing": int(missing),
                                            "configurations": full}
                continue
            sizes = np.array([a.size for a in avail])
            flat = np.concatenate(avail)
            starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
            picks = flat[starts + gen.integers(0, sizes, (int(B), K))]  # (B, K)
            draws = np.concatenate([
                _cmi_batch(g[picks[s:s + chunk]], vals[picks[s:s + chunk]][:, :, cols],
                           cells, ai, bi) for s in range(0, int(B), chunk)])
            for j, k in enumerate(cols):
                dk = draws[:, j][np.isfinite(draws[:, j])]
                lo, hi = (np.quantile(dk, [(1 - level) / 2, (1 + level) / 2]) if dk.size
                          else (np.nan, np.nan))
                out[metrics[k]][fam] = {"value": float(dk.mean()) if dk.size else float("nan"),
                                        "lo": float(lo), "hi": float(hi), "missing": 0,
                                        "configurations": full}
    return out
