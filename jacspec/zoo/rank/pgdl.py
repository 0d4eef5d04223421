"""PGDL's conditional mutual information score of a generalization metric (Jiang et al.
2020, the NeurIPS 2020 "Predicting Generalization in Deep Learning" competition), computed as
the competition's scoring program does: over *all* ordered pairs of models ``(m1, m2)``
(self-pairs included), ``V_g = [g_1 > g_2]``, ``V_mu = [mu_1 > mu_2]``; for two conditioning
factors the cell of a pair is ``(v_h1(m1), v_h1(m2), v_h2(m1), v_h2(m2))``; per-cell
``I(V_mu; V_g)`` and ``H(V_g)`` are averaged uniformly over the cells and the score is
``min_{h1 != h2} mean I / mean H`` (x 100 on PGDL's leaderboard).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from jacspec.zoo.rank.grid import as_text, group_codes, is_complete_grid, is_unique_grid

logger = logging.getLogger(__name__)

__all__ = ["conditional_mutual_information", "pgdl_cmi_codes", "replicate_cmi"]


# PGDL's scoring program takes log2(p + 1e-12) in the entropy of the gap sign.
_PGDL_LOG_EPS = 1e-12


def pgdl_entropy(counts: np.ndarray) -> np.ndarray:
    """Entropy in bits of each row of ``counts`` (last axis), as PGDL's scorer computes it."""
    p = counts / counts.sum(axis=-1, keepdims=True)
    return -np.sum(p * np.log2(p + _PGDL_LOG_EPS), axis=-1)


def mutual_information(tables: np.ndarray) -> np.ndarray:
    """``I(A; B)`` in bits of each 2x2 contingency table of counts in ``tables[k]``."""
    total = tables.sum(axis=(1, 2), keepdims=True)
    pj = tables / total
    pa, pb = pj.sum(axis=2, keepdims=True), pj.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(pj > 0, pj * np.log2(pj / (pa * pb)), 0.0)
    return terms.sum(axis=(1, 2))


def conditional_mutual_information(df: pd.DataFrame, metric: str, factors: Sequence[str], *,
                                   gap: str = "gap", size: int = 2,
                                   require_complete: bool = True) -> tuple[float, dict[str, float]]:
    """PGDL's conditional mutual information score and its value for each conditioning set.

    As the competition's scoring program: every ordered pair of models ``(m1, m2)``,
    self-pairs included, adds one count to the 2x2 table ``([g1 > g2], [mu1 > mu2])`` of the
    cell ``(v_h(m1), v_h(m2))_{h in S}``; with ``I_u`` the mutual information and ``H_u`` the
    entropy of the gap sign (bits) of cell ``u``, the value for ``S`` is
    ``mean_u I_u / mean_u H_u`` with every cell weighted equally, and the score is the minimum
    over the sets ``S`` of ``size`` factors (PGDL: ``size=2``, the minimum over ``h1 != h2``;
    the order of ``h1, h2`` does not change the value). The leaderboard shows 100 x score.

    PGDL requires a complete grid with one model per configuration: otherwise NaN (with a log
    note) when ``require_complete``; with ``require_complete=False`` the same formula runs over
    the cells that hold pairs (not PGDL's number). NaN with fewer than ``size`` factors.
    Returns the score and the value for each ``S`` (key ``"f1,f2"``).
    """
    factors = list(factors)
    if size < 1:
        raise ValueError(f"size must be a positive number of conditioning factors, got {size}")
    d = df[[metric, gap] + factors].dropna(subset=[metric, gap])
    if require_complete and not (is_complete_grid(df, factors) and len(d) == len(df)):
        logger.info("CMI skipped: the grid over %s is not complete", factors)
        return float("nan"), {}
    if require_complete and not is_unique_grid(df, factors):
        logger.info("CMI skipped: the grid over %s has more than one model per configuration "
                    "(PGDL's score needs exactly one)", factors)
        return float("nan"), {}
    if len(d) < 2 or len(factors) < size:
        return float("nan"), {}
    return pgdl_cmi_codes(d[metric].to_numpy(float), d[gap].to_numpy(float),
                          {f: group_codes(d, [f]) for f in factors}, size=size)


def pgdl_cmi_codes(mu: np.ndarray, g: np.ndarray, codes: Mapping[str, np.ndarray], *,
                   size: int = 2) -> tuple[float, dict[str, float]]:
    """The arithmetic of :func:`conditional_mutual_information` on arrays, nothing checked:
    ``mu``, ``g`` of shape ``(n,)`` and, per factor, integer codes ``(n,)`` of its value
    (for a bootstrap that draws many grids of the same models)."""
    n = mu.size
    if n < 2 or len(codes) < size:
        return float("nan"), {}
    a, b = (x.ravel() for x in np.meshgrid(np.arange(n), np.arange(n), indexing="ij"))
    sign = 2 * (g[a] > g[b]).astype(np.int64) + (mu[a] > mu[b]).astype(np.int64)
    per: dict[str, float] = {}
    for subset in itertools.combinations(codes, size):
        cell = np.zeros(a.size, dtype=np.int64)
        for f in subset:
            c = codes[f]
            m = int(c.max()) + 1
            cell = (cell * m + c[a]) * m + c[b]
        _, cell = np.unique(cell, return_inverse=True)
        tables = np.bincount(cell * 4 + sign, minlength=4 * (int(cell.max()) + 1))
        tables = tables.reshape(-1, 2, 2).astype(np.float64)
        mi = float(np.mean(mutual_information(tables)))
        h = float(np.mean(pgdl_entropy(tables.sum(axis=2))))
        per[",".join(subset)] = mi / h if h > 0 else float("nan")
    vals = [v for v in per.values() if np.isfinite(v)]
    return (float(min(vals)) if vals else float("nan")), per


def replicate_cmi(df: pd.DataFrame, metric: str, factors: Sequence[str], *, gap: str = "gap",
                  replicate: str = "seed") -> tuple[float, dict[str, float]]:
    """PGDL's score on a zoo with replicates: each value of ``replicate`` (seed) selects one
    PGDL task (a complete grid with one model per configuration) scored by
    :func:`conditional_mutual_information`; the score is the mean over the replicates.
    NaN (with a log note) unless every replicate's models form such a grid over the same
    configurations. Returns the mean and the value of each replicate (key ``str(value)``)."""
    factors = list(factors)
    if replicate not in df or df[replicate].nunique() < 2:
        return conditional_mutual_information(df, metric, factors, gap=gap)[0], {}
    per: dict[str, float] = {}
    cells = None
    for value, sub in df.groupby(replicate, sort=True):
        here = set(map(tuple, as_text(sub[factors]).to_numpy()))
        if cells is not None and here != cells:
            logger.info("CMI skipped: the %s replicates cover different configurations",
                        replicate)
            return float("nan"), {}
        cells = here
        per[str(value)] = conditional_mutual_information(sub, metric, factors, gap=gap)[0]
    vals = list(per.values())
    return (float(np.mean(vals)) if all(np.isfinite(vals)) else float("nan")), per
