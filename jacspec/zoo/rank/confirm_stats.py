"""Building blocks of study 2's pre-registered test (``docs/results/mnist_study2.md``,
§1.3-1.5, §5, §6), each usable on its own; :mod:`jacspec.zoo.rank.confirm` puts them together.

- :func:`within_group_pairs`: the pairs ``i < j`` of networks of the same family (§1.2);
- :func:`partial_kendall`: tau-b over those pairs and Kendall's (1942) partial tau
  ``tau_xy.z = (tau_xy - tau_xz tau_yz) / sqrt((1 - tau_xz^2)(1 - tau_yz^2))``;
- :func:`cluster_bootstrap_indices`: the paired two-stage cluster bootstrap (configurations
  within each family, then seeds within each drawn configuration);
- :func:`pair_counts`: the weighted pair sums every tau of a draw is made of;
- :func:`max_t`: the single-step max-T (Westfall-Young / Romano-Wolf) lower bounds and
  adjusted p-values of ``Delta_S = |tau_SG.Z| - max_C |tau_CG.Z|``;
- :func:`clopper_pearson_bound`: exact one-sided binomial bounds (``alpha^(1/N)`` at k = N);
- :func:`other_seeds_gap` (the noise ceiling) and :func:`icc1` (the gap's intra-class
  correlation across seeds).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from jacspec._util.json import jsonable
from jacspec._util.random import numpy_generator
from jacspec.zoo.rank.grid import group_codes

__all__ = ["MaxT", "clopper_pearson_bound", "cluster_bootstrap_indices", "icc1",
           "kendall_tau_b_within", "max_t", "other_seeds_gap", "pair_counts",
           "partial_from_taus", "partial_kendall", "within_group_pairs"]

# |tau| at or above this is treated as 1 (the partial tau is then undefined)
_ONE = 1.0 - 1e-12


def _codes(groups: Any, n: int) -> np.ndarray:
    """Integer codes of ``groups`` (None: one group), checked against ``n`` points."""
    if groups is None:
        return np.zeros(n, dtype=np.int64)
    g = np.asarray(groups).ravel()
    if g.size != n:
        raise ValueError(f"groups must have one label per point ({n}), got {g.size}")
    return np.unique(g.astype(str), return_inverse=True)[1].astype(np.int64)


def within_group_pairs(groups: Any) -> tuple[np.ndarray, np.ndarray]:
    """Positions ``(i, j)``, ``i < j``, of every pair of points with the same group label
    (study 2: networks of the same architecture family; pairs across families are left
    out)."""
    codes = _codes(groups, np.asarray(groups).size)
    pi, pj = [], []
    for c in np.unique(codes):
        idx = np.flatnonzero(codes == c)
        a, b = np.triu_indices(idx.size, k=1)
        pi.append(idx[a])
        pj.append(idx[b])
    if not pi:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(pi), np.concatenate(pj)


def _finite(*arrays: np.ndarray) -> np.ndarray:
    keep = np.ones(arrays[0].shape, dtype=bool)
    for a in arrays:
        keep &= np.isfinite(a)
    return keep


def _as_float(name: str, x: Any, n: int | None = None) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).ravel()
    if n is not None and a.size != n:
        raise ValueError(f"{name} must have the same length as x ({n}), got {a.size}")
    return a


def partial_from_taus(t_xy: Any, t_xz: Any, t_yz: Any) -> np.ndarray:
    """``(t_xy - t_xz t_yz) / sqrt((1 - t_xz^2)(1 - t_yz^2))`` elementwise; NaN where
    ``|t_xz| = 1`` or ``|t_yz| = 1`` or an input is NaN."""
    t_xy, t_xz, t_yz = (np.asarray(t, dtype=np.float64) for t in (t_xy, t_xz, t_yz))
    with np.errstate(divide="ignore", invalid="ignore"):
        den = np.sqrt((1.0 - t_xz ** 2) * (1.0 - t_yz ** 2))
        out = (t_xy - t_xz * t_yz) / den
    bad = (np.abs(t_xz) >= _ONE) | (np.abs(t_yz) >= _ONE) | ~np.isfinite(out)
    return np.where(bad, np.nan, out)


def _signs(x: np.ndarray, pi: np.ndarray, pj: np.ndarray) -> np.ndarray:
    return np.sign(x[pi] - x[pj])


def kendall_tau_b_within(x: Any, y: Any, groups: Any = None) -> float:
    """tau-b over the within-group pairs ``P`` of the points finite in both:
    ``sum_P a(x) a(y) / sqrt(sum_P a(x)^2 sum_P a(y)^2)``, ``a_ij(x) = sign(x_i - x_j)``
    (ties count 0 in the numerator and drop out of the denominator); NaN when a side has
    no untied pair."""
    x = _as_float("x", x)
    y = _as_float("y", y, x.size)
    g = _codes(groups, x.size)
    keep = _finite(x, y)
    pi, pj = within_group_pairs(g[keep])
    sx, sy = _signs(x[keep], pi, pj), _signs(y[keep], pi, pj)
    den = np.sqrt(float(np.sum(sx * sx)) * float(np.sum(sy * sy)))
    return float(np.sum(sx * sy) / den) if den > 0 else float("nan")


def partial_kendall(x: Any, y: Any, z: Any, groups: Any = None) -> float:
    """Kendall's partial tau of ``x`` and ``y`` given ``z`` over the within-group pairs.

    ``tau_xy.z = (tau_xy - tau_xz tau_yz) / sqrt((1 - tau_xz^2)(1 - tau_yz^2))`` with every
    tau a tau-b (:func:`kendall_tau_b_within`) over the pairs of distinct points of the same
    group (``groups``: a family label per point; None: one group), on the points finite in
    all three. NaN when ``|tau_xz| = 1`` or ``|tau_yz| = 1`` (or a tau is undefined).
    """
    x = _as_float("x", x)
    y, z = _as_float("y", y, x.size), _as_float("z", z, x.size)
    g = _codes(groups, x.size)
    keep = _finite(x, y, z)
    x, y, z, g = x[keep], y[keep], z[keep], g[keep]
    t = [kendall_tau_b_within(a, b, g) for a, b in ((x, y), (x, z), (y, z))]
    return float(partial_from_taus(*t))


def cluster_bootstrap_indices(families: Any, configs: Any, B: int,
                              rng: int | np.random.Generator = 19) -> list[np.ndarray]:
    """``B`` draws of the paired two-stage cluster bootstrap (study 2, §5.1), as row
    positions (a row drawn twice appears twice).

    In each draw, for each family in sorted order: its ``K`` configurations are drawn with
    replacement (``rng.integers(0, K, K)``), then within each drawn configuration its ``n_c``
    networks (seeds) are drawn with replacement (``n_c`` of them). ``families`` and
    ``configs`` give a label per row; a configuration lies in one family. Every metric is
    then computed on the same draw (so differences between metrics are paired).
    """
    if not isinstance(B, (int, np.integer)) or isinstance(B, bool) or B < 1:
        raise ValueError(f"B must be a positive number of bootstrap draws, got {B!r}")
    conf = _codes(configs, np.asarray(configs).size)
    fam = _codes(families, conf.size)
    gen = numpy_generator(rng)
    layout = []
    for f in np.unique(fam):
        cs = np.unique(conf[fam == f])
        members = [np.flatnonzero(conf == c) for c in cs]
        if any(np.unique(fam[m]).size > 1 for m in members):
            raise ValueError("configs: a configuration spans two families; each "
                             "configuration must lie in one family")
        sizes = np.array([m.size for m in members])
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        layout.append((np.concatenate(members), sizes, starts))
    draws = []
    for _ in range(int(B)):
        parts = []
        for flat, sizes, starts in layout:
            pick = gen.integers(0, sizes.size, sizes.size)
            rep = np.repeat(pick, sizes[pick])
            parts.append(flat[starts[rep] + gen.integers(0, sizes[rep])])
        draws.append(np.concatenate(parts))
    return draws


def pair_counts(weights: np.ndarray, pi: np.ndarray, pj: np.ndarray,
                columns: np.ndarray, *, chunk: int = 64) -> np.ndarray:
    """``sum_p w_i(p) w_j(p) columns[p, k]`` for every row of ``weights`` ``(D, n)`` (the
    multiplicity of each network in a draw) and every column ``k``: the pair sums of a draw
    in which pairs of a network with a copy of itself are left out (a pair ``i < j`` of
    distinct networks occurs ``w_i w_j`` times). Exact: the counts are integers, summed in
    float32 only while they stay below 2^24."""
    weights = np.asarray(weights, dtype=np.float64)
    bound = float(np.max(weights, initial=0.0)) ** 2 * max(pi.size, 1)
    dtype = np.float32 if bound < 2 ** 24 else np.float64
    cols = np.ascontiguousarray(columns, dtype=dtype)
    out = np.empty((weights.shape[0], cols.shape[1]), dtype=np.float64)
    for s in range(0, weights.shape[0], chunk):
        w = weights[s:s + chunk].astype(dtype)
        out[s:s + chunk] = (w[:, pi] * w[:, pj]) @ cols
    return out


@dataclass(frozen=True)
class MaxT:
    """Single-step max-T over the shape metrics (study 2, §5.3)."""

    names: tuple[str, ...]
    delta: np.ndarray
    se: np.ndarray
    studentised: np.ndarray
    lower: np.ndarray
    p_adjusted: np.ndarray
    delta_lo: np.ndarray
    delta_hi: np.ndarray
    critical: float
    B: int
    level: float

    @property
    def settings(self) -> dict[str, Any]:
        return {"B": self.B, "level": self.level, "names": list(self.names)}

    def to_frame(self) -> pd.DataFrame:
        """One row per shape metric: Delta, se, Delta / se, L_S, p_S and Delta's marginal
        percentile interval."""
        return pd.DataFrame({"delta": self.delta, "se": self.se, "studentised": self.studentised,
                             "lower_bound": self.lower, "p_adjusted": self.p_adjusted,
                             "delta_lo": self.delta_lo, "delta_hi": self.delta_hi},
                            index=pd.Index(self.names, name="metric"))

    def to_dict(self) -> dict[str, Any]:
        return jsonable({"rows": self.to_frame().reset_index().to_dict("records"),
                         "critical": self.critical, "settings": self.settings})

    def summary(self) -> dict[str, Any]:
        return jsonable({"critical": self.critical,
                         "rejected": [n for n, lo in zip(self.names, self.lower, strict=True)
                                      if lo > 0]})


def max_t(shape_partial: Any, shape_draws: Any, comparator_partial: Any,
          comparator_draws: Any, *, names: Sequence[str] | None = None,
          level: float = 0.95) -> MaxT:
    """Max-T adjustment of ``Delta_S = |tau_SG.Z| - max_C |tau_CG.Z|``.

    ``shape_partial`` ``(m,)`` and ``shape_draws`` ``(B, m)``: ``tau_SG.Z`` on the data and in
    each draw; ``comparator_partial`` ``(k,)`` or ``(m, k)`` and ``comparator_draws``
    ``(B, k)`` or ``(B, m, k)``: ``tau_CG.Z`` (per shape metric where their networks differ).
    The best comparator is recomputed in every draw (NaN comparators skipped).
    ``se_S`` = standard deviation (ddof 1) of ``Delta^b_S``;
    ``M^b = max_S (Delta^b_S - Delta_S) / se_S``; ``c`` = the ``level`` quantile of ``M^b``
    (numpy's linear rule); ``L_S = Delta_S - c se_S``;
    ``p_S = (1 + #{b: M^b >= Delta_S / se_S}) / (B + 1)``. Draws with a NaN are left out of
    that metric's se and of the max.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    sp = np.asarray(shape_partial, dtype=np.float64).ravel()
    sd = np.asarray(shape_draws, dtype=np.float64)
    m = sp.size
    if sd.ndim != 2 or sd.shape[1] != m or sd.shape[0] < 2:
        raise ValueError(f"shape_draws must be (B >= 2, {m}), got {sd.shape}")
    cp = np.asarray(comparator_partial, dtype=np.float64)
    cd = np.asarray(comparator_draws, dtype=np.float64)
    if cp.ndim == 1:
        cp = np.broadcast_to(cp, (m, cp.size))
    if cd.ndim == 2:
        cd = np.broadcast_to(cd[:, None, :], (cd.shape[0], m, cd.shape[1]))
    if cp.shape[0] != m or cd.shape[:2] != sd.shape or cd.shape[2] != cp.shape[1]:
        raise ValueError("comparator_partial / comparator_draws do not match the shape "
                         f"metrics: {cp.shape} and {cd.shape} for {m} metrics, {sd.shape[0]} "
                         "draws")
    names = tuple(names) if names is not None else tuple(f"S{i}" for i in range(m))
    if len(names) != m:
        raise ValueError(f"names must name the {m} shape metrics, got {len(names)}")

    def best(c: np.ndarray) -> np.ndarray:
        a = np.abs(c)
        ok = np.isfinite(a).any(axis=-1)
        return np.where(ok, np.max(np.where(np.isfinite(a), a, -np.inf), axis=-1), np.nan)

    delta = np.abs(sp) - best(cp)
    draws = np.abs(sd) - best(cd)
    B = sd.shape[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        se = np.array([np.std(d[np.isfinite(d)], ddof=1) if np.isfinite(d).sum() > 1
                       else np.nan for d in draws.T])
        t = (draws - delta) / se
        t = np.where(np.isfinite(t), t, -np.inf)
        M = t.max(axis=1)
        stud = delta / se
    M_ok = M[np.isfinite(M)]
    crit = float(np.quantile(M_ok, level)) if M_ok.size else float("nan")
    lower = delta - crit * se
    p = np.array([(1 + np.count_nonzero(M >= s)) / (B + 1) if np.isfinite(s) else np.nan
                  for s in stud])
    lo, hi = _percentiles(draws, level)
    return MaxT(names=names, delta=delta, se=se, studentised=stud, lower=lower, p_adjusted=p,
                delta_lo=lo, delta_hi=hi, critical=crit, B=int(B), level=float(level))


def _percentiles(draws: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of each column of ``draws`` (NaN draws left out)."""
    qs = [(1 - level) / 2, (1 + level) / 2]
    out = np.full((2, draws.shape[1]), np.nan)
    for k in range(draws.shape[1]):
        d = draws[:, k]
        d = d[np.isfinite(d)]
        if d.size:
            out[:, k] = np.quantile(d, qs)
    return out[0], out[1]


def clopper_pearson_bound(k: int, n: int, *, alpha: float = 0.05,
                          side: str = "auto") -> float:
    """Exact one-sided ``1 - alpha`` Clopper-Pearson bound of a proportion from ``k`` of
    ``n`` independent units.

    ``side="lower"``: the ``p`` with ``P(X >= k | p) = alpha``, i.e. ``Beta(alpha; k,
    n - k + 1)`` (0 at ``k = 0``; ``alpha^(1/n)`` at ``k = n``). ``side="upper"``: the ``p``
    with ``P(X <= k | p) = alpha``, ``Beta(1 - alpha; k + 1, n - k)`` (1 at ``k = n``;
    ``1 - alpha^(1/n)`` at ``k = 0``). ``"auto"``: the bound away from the nearer boundary
    (lower at ``k = n`` or ``k > n/2``, upper otherwise), the study-2 use at a bound.
    """
    for name, v in (("k", k), ("n", n)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
            raise TypeError(f"{name} must be an integer count, got {type(v).__name__}")
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if side not in ("lower", "upper", "auto"):
        raise ValueError(f"side must be 'lower', 'upper' or 'auto', got {side!r}")
    if side == "auto":
        side = "lower" if 2 * k > n else "upper"
    if side == "lower":
        if k == 0:
            return 0.0
        if k == n:
            return float(alpha ** (1.0 / n))
        from scipy.special import betaincinv

        return float(betaincinv(k, n - k + 1, alpha))
    if k == n:
        return 1.0
    if k == 0:
        return float(1.0 - alpha ** (1.0 / n))
    from scipy.special import betaincinv

    return float(betaincinv(k + 1, n - k, 1 - alpha))


def other_seeds_gap(frame: pd.DataFrame, config_keys: Sequence[str], *, gap: str = "gap",
                    seed: str = "seed") -> pd.Series:
    """The noise ceiling of study 2 (§5.5): for each network, the mean ``gap`` of the other
    networks (seeds) of its configuration (the rows equal in every key of ``config_keys``
    but ``seed``) with a finite gap; NaN for a network alone in its configuration."""
    keys = [k for k in config_keys if k != seed]
    missing = [k for k in [*keys, gap] if k not in frame]
    if missing:
        raise ValueError(f"other_seeds_gap: columns {missing} are not in the frame")
    g = frame[gap].to_numpy(float)
    ok = np.isfinite(g)
    conf = group_codes(frame, keys)
    tot = np.bincount(conf, weights=np.where(ok, g, 0.0))
    cnt = np.bincount(conf, weights=ok.astype(float))
    own_s, own_c = np.where(ok, g, 0.0), ok.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (tot[conf] - own_s) / (cnt[conf] - own_c)
    out[(cnt[conf] - own_c) <= 0] = np.nan
    return pd.Series(out, index=frame.index, name="other_seeds_gap")


def icc1(values: Any, groups: Any) -> float:
    """One-way random-effects intra-class correlation ICC(1) of ``values`` in ``groups``
    (study 2: the gap across the seeds of each configuration).

    ``ICC(1) = (MSB - MSW) / (MSB + (k0 - 1) MSW)`` with ``MSB = sum_c n_c (m_c - m)^2 /
    (a - 1)``, ``MSW = sum_c sum_i (x_ci - m_c)^2 / (N - a)`` over the ``a`` groups with a
    finite value, and ``k0 = (N - sum_c n_c^2 / N) / (a - 1)`` (the group size when
    balanced). NaN with fewer than two groups or no replicate.
    """
    x = _as_float("values", values)
    g = _codes(groups, x.size)
    keep = np.isfinite(x)
    x, g = x[keep], np.unique(g[keep], return_inverse=True)[1]
    a, N = int(g.max()) + 1 if g.size else 0, x.size
    if a < 2 or N <= a:
        return float("nan")
    n = np.bincount(g).astype(float)
    mc = np.bincount(g, weights=x) / n
    msb = float(np.sum(n * (mc - x.mean()) ** 2) / (a - 1))
    msw = float(np.sum((x - mc[g]) ** 2) / (N - a))
    k0 = (N - float(np.sum(n ** 2)) / N) / (a - 1)
    den = msb + (k0 - 1) * msw
    return float((msb - msw) / den) if den > 0 else float("nan")
