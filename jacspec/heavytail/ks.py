"""The xmin scan of a power-law fit: MLE alpha per candidate and exact KS distances.

For sorted positive values with logs ``L`` and a candidate start ``i`` (tail ``x[i:]``,
``m = n - i``): ``alpha_i = 1 + m / sum_{j>=i} (L_j - L_i)`` and
``D_i = max_{j>=i} max(F_i(x_j) - (j-i)/m, (j-i+1)/m - F_i(x_j))`` with
``F_i(x) = 1 - (x/x_i)^(1-alpha_i)``. The minimiser of D over candidates is found exactly by
branch-and-bound over strided lower bounds (see :mod:`jacspec.heavytail.powerlaw`).
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["candidates", "ks_distances", "peak_window", "scan"]

_WINDOW = 8  # exact columns each side of a coarse argmax in the pruning bound
_BLOCK_ELEMENTS = 1 << 17  # elements per broadcast block in the KS scan (1 MiB float64)


def _alphas(logx: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """MLE alpha for the tails starting at sorted positions ``idx``: 1 + m / sum ln(x/xmin)."""
    n = logx.size
    suffix = np.cumsum(logx[::-1])[::-1]  # suffix[i] = sum_{j>=i} ln x_j
    m = (n - idx).astype(np.float64)
    denom = suffix[idx] - m * logx[idx]
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = 1.0 + m / denom
    alpha[~(denom > 0)] = np.inf
    return alpha


_TOP = 8  # candidates scanned exactly to get the first upper bound on min D
_LB_SLACK = 1e-5  # float32 rounding allowance subtracted from pruning bounds


def _dev_block(
    logx: np.ndarray, pos: np.ndarray, ii: np.ndarray, bb: np.ndarray, dtype: type
) -> tuple[np.ndarray, np.ndarray]:
    """max_j |F_i(x_j) - (j - i + 1/2)/m_i| over columns ``pos`` (sorted positions), one row
    per candidate ``ii`` with b = alpha - 1, computed as |S - (1 - mid)| with the survival
    S = exp(-b (L_j - L_i)). Columns j < i are clamped to j = i (their value, 1/(2m), is the
    j = i value, so the max is unchanged). Returns the max and its column."""
    n = logx.size
    lx = logx.astype(dtype, copy=False)
    t = np.subtract.outer(-lx[ii], -lx[pos])  # L_j - L_i
    np.maximum(t, 0, out=t)
    t *= (-bb).astype(dtype)[:, None]
    np.exp(t, out=t)
    q = np.subtract.outer(ii.astype(dtype), pos.astype(dtype))  # i - j
    np.minimum(q, 0, out=q)
    q -= 0.5
    q *= (1.0 / (n - ii)).astype(dtype)[:, None]
    q += 1  # 1 - mid
    t -= q
    np.abs(t, out=t)
    k = np.argmax(t, axis=1)
    return t[np.arange(t.shape[0]), k].astype(np.float64), pos[k]


def ks_distances(logx: np.ndarray, idx: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """KS distance of the power-law fit for every candidate start ``idx``.

    ``logx``: ln of the sorted positive sample (n,). ``idx``: candidate positions; the tail
    of candidate i is ``x[i:]`` with ``m = n - i``. ``alpha``: exponent per candidate.
    D_i = max_{j>=i} |F_i(x_j) - (j - i + 1/2)/m| + 1/(2m), F_i = 1 - exp((1-alpha)(L_j - L_i)),
    which equals max_j max(F_i - (j-i)/m, (j-i+1)/m - F_i). Work: blocks of candidates
    broadcast against the columns ``j >= min(block)`` (the triangle j >= i only).
    """
    return _strided_dev(logx, np.asarray(idx, dtype=np.int64), np.asarray(alpha, float), 1)


def _strided_dev(logx: np.ndarray, idx: np.ndarray, alpha: np.ndarray, stride: int) -> np.ndarray:
    """KS distance (stride 1, float64) or a lower bound on it (stride s > 1, float32 minus
    ``_LB_SLACK``: only the columns on the global grid j = 0, s, 2s, ... and the 2w+1
    columns around the grid's argmax are compared, a subset of the sup; the window makes
    the bound nearly tight)."""
    n = logx.size
    out = np.full(idx.size, np.inf)
    if idx.size == 0:
        return out
    dtype = np.float64 if stride == 1 else np.float32
    order = np.argsort(idx, kind="stable")
    sidx = idx[order]
    sal = alpha[order]
    res = np.full(idx.size, np.inf)
    b0 = 0
    while b0 < sidx.size:
        i0 = int(sidx[b0])
        start = (i0 // stride) * stride
        pos = np.arange(start, n, stride, dtype=np.int64)
        bsize = max(1, _BLOCK_ELEMENTS // max(pos.size, 1))
        b1 = min(sidx.size, b0 + bsize)
        ii = sidx[b0:b1]
        aa = sal[b0:b1]
        ok = np.isfinite(aa)
        bb = np.where(ok, aa - 1.0, 0.0)
        d, jmax = _dev_block(logx, pos, ii, bb, dtype)
        if stride > 1 and _WINDOW > 0:  # add exact columns around the coarse argmax
            w = min(stride, _WINDOW)
            win = jmax[:, None] + np.arange(-w, w + 1)[None, :]
            np.maximum(win, ii[:, None], out=win)
            np.minimum(win, n - 1, out=win)
            d = np.maximum(d, _window_dev(logx, win, ii, bb))
        if stride > 1:
            d -= _LB_SLACK
        d += 0.5 / (n - ii)
        d[~ok] = np.inf
        res[b0:b1] = d
        b0 = b1
    out[order] = res
    return out


def _window_dev(logx: np.ndarray, win: np.ndarray, ii: np.ndarray, bb: np.ndarray) -> np.ndarray:
    """max over the per-row columns ``win`` (rows x w) of |F_i(x_j) - (j - i + 1/2)/m|."""
    n = logx.size
    lx = logx.astype(np.float32)
    s = np.exp((-bb).astype(np.float32)[:, None] * (lx[win] - lx[ii][:, None]))
    q = (win - ii[:, None]).astype(np.float32)
    q += 0.5
    q *= (1.0 / (n - ii)).astype(np.float32)[:, None]
    s += q
    s -= 1
    np.abs(s, out=s)
    return s.max(axis=1).astype(np.float64)


def candidates(x: np.ndarray, min_tail: int, window: tuple[float, float] | None) -> np.ndarray:
    """Sorted positions of distinct values usable as xmin (tail >= min_tail, inside window)."""
    n = x.size
    first = np.ones(n, dtype=bool)
    first[1:] = x[1:] != x[:-1]
    idx = np.flatnonzero(first)
    idx = idx[(n - idx) >= min_tail]
    if window is not None:
        lo, hi = window
        idx = idx[(x[idx] >= lo) & (x[idx] <= hi)]
    return idx


def _exact_argmin(
    logx: np.ndarray, idx: np.ndarray, strides: tuple[int, ...] = (256, 32, 4)
) -> tuple[int, float, float]:
    """Exact CSN minimiser over candidate positions ``idx`` (sorted), with bound pruning.

    At each stride s, a lower bound LB_i <= D_i is computed from every s-th point; the
    exact D of the few candidates with the smallest LB gives an upper bound ``best`` on
    min D, and every candidate with LB_i > best is dropped (it cannot be the minimiser).
    Survivors get the exact O(m) scan. The answer equals the plain argmin over all
    candidates (first one on ties); only the work shrinks (~n^2/(2*64) plus survivors).
    """
    alpha = _alphas(logx, idx)
    alive = np.flatnonzero(np.isfinite(alpha))
    if alive.size == 0:
        raise ValueError("no xmin candidate gives a finite power-law fit (all tail values equal?)")
    best = np.inf
    for stride in strides:
        if alive.size <= 64:
            break
        low = _strided_dev(logx, idx[alive], alpha[alive], stride)
        # exact D of the few with the smallest bound: an upper bound on min D
        top = alive[np.argsort(low, kind="stable")[:_TOP]]
        best = min(best, float(np.min(_strided_dev(logx, idx[top], alpha[top], 1))))
        alive = alive[low <= best * (1.0 + 1e-12)]
        logger.debug("KS pruning: stride %d leaves %d candidates", stride, alive.size)
    d = _strided_dev(logx, idx[alive], alpha[alive], 1)
    k = int(np.argmin(d))
    return int(alive[k]), float(alpha[alive[k]]), float(d[k])


def scan(
    x: np.ndarray, idx: np.ndarray, max_candidates: int | None
) -> tuple[int, float, float, int, bool]:
    """Best candidate position, its alpha and D, the number of candidates scanned, exactness.

    When ``max_candidates`` is set and exceeded, a coarse grid of ``max_candidates``
    candidates evenly spaced in rank is scanned, then every candidate between the two
    coarse neighbours of the coarse winner is scanned too (local refinement).
    """
    logx = np.log(x)
    if max_candidates is None or idx.size <= max_candidates:
        scan = idx
        exact = True
    else:
        pos = np.unique(np.linspace(0, idx.size - 1, max_candidates).round().astype(np.int64))
        coarse = idx[pos]
        k, _, _ = _exact_argmin(logx, coarse)
        lo = pos[max(k - 1, 0)]
        hi = pos[min(k + 1, pos.size - 1)]
        scan = np.union1d(coarse, idx[lo : hi + 1])
        exact = False
    k, alpha, dist = _exact_argmin(logx, scan)
    return int(scan[k]), alpha, dist, int(scan.size), exact


def peak_window(x: np.ndarray, bins: int = 100) -> tuple[float, float]:
    """WeightWatcher's 'xmin_peak' window: peak of a 100-bin histogram of log10 x at edge
    ``p``; xmin searched in ``[0.95 * 10^p, 1.5 * 10^p]``."""
    counts, edges = np.histogram(np.log10(x), bins=bins)
    peak = 10.0 ** edges[int(np.argmax(counts))]
    return 0.95 * peak, 1.5 * peak
