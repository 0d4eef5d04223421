"""The Marchenko-Pastur law and a fit of an ESD's bulk to it (:func:`fit_mp`, :class:`MPFit`).

Conventions. ``A`` is ``rows x cols`` (the data Jacobian 𝒥 is ``n x kd``), ``Q = rows/cols``
and the ESD is the spectrum of ``A A^T / rows`` (equivalently the nonzero part of
``A^T A / rows``; jacspec's default ``scale="n"``). For iid entries of variance sigma^2 the
nonzero eigenvalues follow Marchenko-Pastur with edges

    lambda_pm = sigma^2 (1 +- Q^{-1/2})^2,
    p(x) = sqrt((lambda_+ - x)(x - lambda_-)) / (2 pi sigma^2 min(1/Q, 1) x)
    on [lambda_-, lambda_+]

(for Q < 1 the n x n side has rank cols; the formula is for its min(rows, cols) nonzero
eigenvalues either way).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from jacspec._util.json import jsonable
from jacspec._util.validation import positive_int

__all__ = ["NO_BULK", "MPFit", "fit_mp", "mp_density", "mp_edges", "mp_quantile"]


def _check_q(Q: float) -> float:
    try:
        q = float(Q)
    except (TypeError, ValueError) as err:
        raise TypeError(f"Q must be a positive number (rows/cols); got {Q!r}") from err
    if not (math.isfinite(q) and q > 0):
        raise ValueError(f"Q={Q!r} must be a positive finite number (rows/cols)")
    return q


def mp_edges(Q: float, sigma2: float = 1.0) -> tuple[float, float]:
    """Bulk edges (lambda_-, lambda_+) = sigma^2 (1 -+ Q^{-1/2})^2."""
    q = _check_q(Q)
    r = 1.0 / math.sqrt(q)
    return sigma2 * (1.0 - r) ** 2, sigma2 * (1.0 + r) ** 2


def mp_density(x: Any, Q: float, sigma2: float = 1.0) -> np.ndarray:
    """Marchenko-Pastur density of the min(rows, cols) nonzero eigenvalues at ``x``."""
    x = np.asarray(x, dtype=np.float64)
    lo, hi = mp_edges(Q, sigma2)
    g = min(1.0 / float(Q), 1.0)
    out = np.zeros_like(x)
    inside = (x > lo) & (x < hi) & (x > 0)
    xi = x[inside]
    out[inside] = np.sqrt((hi - xi) * (xi - lo)) / (2.0 * math.pi * sigma2 * g * xi)
    return out


def _mp_cdf_table(Q: float, points: int = 4097) -> tuple[np.ndarray, np.ndarray]:
    """(x, CDF) of MP with sigma^2 = 1 on a grid x = lam_- + (lam_+ - lam_-)(1 - cos th)/2,
    th in [0, pi]: the substitution removes the square-root edge singularities."""
    lo, hi = mp_edges(Q, 1.0)
    th = np.linspace(0.0, math.pi, points)
    half = 0.5 * (hi - lo)
    x = lo + half * (1.0 - np.cos(th))
    g = min(1.0 / Q, 1.0)
    # integrand in theta: sqrt(...) dx/dth / (2 pi g x) = half^2 sin^2 th / (2 pi g x)
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(x > 0, half**2 * np.sin(th) ** 2 / (2.0 * math.pi * g * x), 0.0)
    if lo == 0.0:  # Q = 1: finite limit at th = 0 is 2 half / (2 pi) ... use the neighbour
        f[0] = f[1]
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (f[1:] + f[:-1]) * np.diff(th))])
    return x, cdf / cdf[-1]


def mp_quantile(p: Any, Q: float, sigma2: float = 1.0) -> np.ndarray:
    """Quantile function of the MP law (numerical, relative error ~1e-6)."""
    x, cdf = _mp_cdf_table(_check_q(Q))
    return sigma2 * np.interp(np.asarray(p, dtype=np.float64), cdf, x)


@dataclass(frozen=True)
class MPFit:
    """Marchenko-Pastur fit of an ESD's bulk.

    ``sigma2``: fitted entry variance; ``lambda_plus``/``lambda_minus``: bulk edges;
    ``spike_threshold = lambda_plus + tw_tolerance * tw_scale`` where ``tw_scale`` is the
    Tracy-Widom scale of the largest eigenvalue (Johnstone 2001) in the same units;
    ``num_spikes``/``spikes``: eigenvalues above the threshold; ``mp_softrank =
    lambda_plus / lambda_max`` (WeightWatcher's calc_mp_soft_rank); ``rows``, ``cols``:
    the matrix shape assumed; ``num_evals``: eigenvalues fitted (the largest min(rows, cols)
    given); ``num_zeros``: those <= ``tol`` (the rank tolerance: zeros, kept in the bulk's
    median); ``tol``: that tolerance.
    """

    Q: float
    sigma2: float
    lambda_minus: float
    lambda_plus: float
    lambda_max: float
    mp_softrank: float
    num_spikes: int
    spikes: tuple[float, ...]
    spike_threshold: float
    tw_scale: float
    tw_tolerance: float
    rows: int
    cols: int
    num_evals: int
    num_zeros: int
    method: str
    tol: float = 0.0

    @property
    def settings(self) -> dict[str, Any]:
        """What the fit assumed: Q = rows / cols, the shape, the Tracy-Widom tolerance, method
        and the rank tolerance below which eigenvalues were zeros."""
        keys = ("Q", "rows", "cols", "tw_tolerance", "method", "tol")
        return {k: getattr(self, k) for k in keys}

    def summary(self) -> dict[str, Any]:
        """Headline numbers: entry variance, bulk edge, spikes, soft rank."""
        keys = ("sigma2", "lambda_plus", "lambda_max", "mp_softrank", "num_spikes",
                "spike_threshold")
        return jsonable({k: getattr(self, k) for k in keys})

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of every field (NaN written as None)."""
        return jsonable(dict(self.__dict__))

    def to_frame(self) -> Any:
        """One-row pandas DataFrame of :meth:`to_dict`."""
        import pandas as pd

        return pd.DataFrame([self.to_dict()])

    def pdf(self, x: Any) -> np.ndarray:
        """Fitted MP density at ``x`` (density of the nonzero eigenvalues)."""
        return mp_density(x, self.Q, self.sigma2)


def _tw_scale(rows: int, cols: int, sigma2: float) -> float:
    """Johnstone's scale of lambda_max(A^T A) for iid N(0, sigma2) entries, divided by rows:
    sigma2 (sqrt(r-1) + sqrt(c)) (1/sqrt(r-1) + 1/sqrt(c))^{1/3} / r (symmetric in r, c
    up to the -1, taken on the larger side)."""
    big, small = max(rows, cols), min(rows, cols)
    a, b = math.sqrt(max(big - 1, 1)), math.sqrt(small)
    return sigma2 * (a + b) * (1.0 / a + 1.0 / b) ** (1.0 / 3.0) / rows


#: Start of the warning (and of fit_mp's ValueError) when no bulk is above the rank tolerance.
NO_BULK = "no MP bulk above the rank tolerance"


def fit_mp(
    eigenvalues: Any,
    Q: float,
    *,
    rows: int | None = None,
    sigma2: float | None = None,
    tw_tolerance: float = 3.0,
    tol: float | None = None,
    max_iter: int = 20,
) -> MPFit:
    """Fit the Marchenko-Pastur bulk to ``eigenvalues`` of ``A A^T / rows`` with Q = rows/cols.

    ``eigenvalues``: all min(rows, cols) eigenvalues of the matrix (as WeightWatcher fits MP
    to the ESD of the full matrix), zeros included where they are eigenvalues of it. Every
    eigenvalue ``<= tol`` is a zero (round-off, not bulk): ``tol`` is the rank rule's
    tolerance (:func:`jacspec.spectra.eigen.rank_tolerance`; pass the ESD's ``tol``, which
    knows a float32 Jacobian; None: the float64 rule on these eigenvalues), so
    ``num_spikes <= rank``. sigma^2 (unless given) is fitted robustly by median matching on
    the bulk: sigma^2 = median(bulk) / median(MP with sigma^2 = 1), where the bulk starts as
    every eigenvalue and is refined by dropping the eigenvalues above the spike threshold and
    re-matching (at most ``max_iter`` times, until the spike count is stable). The median is
    insensitive to a few spikes, unlike the mean or lambda_max. ``num_zeros`` counts the
    eigenvalues <= tol (kept in the median as zeros); ValueError starting with
    :data:`NO_BULK` when fewer than 3 eigenvalues are above ``tol`` or the median is 0
    (half the spectrum zero: no MP bulk to fit).

    Spikes: eigenvalues above ``lambda_plus + tw_tolerance * s_TW`` with s_TW the
    Tracy-Widom scale (Johnstone 2001; the largest null eigenvalue fluctuates by O(s_TW)
    around lambda_plus, TW1's 99th percentile is ~2.02 s_TW above its centre); the default
    3.0 leaves room for the sigma^2 estimate. ``rows``: the matrix's row count (n for the
    data Jacobian); if None, ``len(eigenvalues)`` is taken as min(rows, cols).
    """
    from jacspec.spectra.eigen import zero_below_tolerance

    q = _check_q(Q)
    ev = _checked_eigenvalues(eigenvalues, tw_tolerance, tol)
    lmax = float(ev.max())
    if not lmax > 0:
        raise ValueError(f"{NO_BULK}: eigenvalues has no positive entry")
    ev, tol = zero_below_tolerance(ev, tol)
    ev, r, c = _mp_shape(ev, q, rows)
    num_zeros = int(np.sum(ev <= 0))
    if ev.size - num_zeros < 3:
        raise ValueError(
            f"{NO_BULK}: {ev.size - num_zeros} of {ev.size} eigenvalues above tol {tol:.3g}; "
            "need at least 3"
        )
    pos = np.sort(ev)  # every eigenvalue: the bulk's median needs them all
    if not float(np.median(pos)) > 0:
        raise ValueError(
            f"{NO_BULK}: {ev.size - num_zeros} of {ev.size} eigenvalues above tol {tol:.3g}, "
            "the median is 0"
        )
    s2, thresh = _fit_sigma2(pos, q, r, c, sigma2, tw_tolerance, max_iter)
    lo, hi = mp_edges(q, s2)
    spikes = pos[pos > thresh][::-1]
    return MPFit(
        Q=q,
        sigma2=s2,
        lambda_minus=lo,
        lambda_plus=hi,
        lambda_max=lmax,
        mp_softrank=hi / lmax,
        num_spikes=int(spikes.size),
        spikes=tuple(float(v) for v in spikes),
        spike_threshold=float(thresh),
        tw_scale=_tw_scale(r, c, s2),
        tw_tolerance=float(tw_tolerance),
        rows=r,
        cols=c,
        num_evals=int(ev.size),
        num_zeros=num_zeros,
        method="given" if sigma2 is not None else "median",
        tol=float(tol),
    )


def _checked_eigenvalues(eigenvalues: Any, tw_tolerance: float, tol: float | None) -> np.ndarray:
    """The eigenvalues as a flat float64 array; ValueError for an empty or non-finite one
    or a bad ``tw_tolerance`` / ``tol``."""
    ev = np.asarray(eigenvalues, dtype=np.float64).ravel()
    if ev.size == 0:
        raise ValueError("eigenvalues is empty; need at least 3 positive eigenvalues")
    if not np.isfinite(ev).all():
        raise ValueError("eigenvalues contain NaN or inf")
    if not (tw_tolerance >= 0):
        raise ValueError(f"tw_tolerance={tw_tolerance!r} must be >= 0")
    if tol is not None and not (math.isfinite(float(tol)) and float(tol) >= 0):
        raise ValueError(f"tol={tol!r} must be None or a finite number >= 0")
    return ev


def _mp_shape(ev: np.ndarray, q: float, rows: int | None) -> tuple[np.ndarray, int, int]:
    """(eigenvalues of the MP law, rows r, cols c = r/Q): ``rows`` or r from len(ev) as
    min(r, c); only the min(r, c) largest eigenvalues are kept (the larger side's extra
    zeros are not part of the law)."""
    if rows is None:
        small = ev.size
        r = int(round(small * q)) if q >= 1 else small
    else:
        r = positive_int("rows", rows)
    c = max(1, int(round(r / q)))
    if ev.size > min(r, c):  # the larger side's extra zeros are not part of the MP law
        ev = np.sort(ev)[::-1][: min(r, c)]
    return ev, r, c


def _fit_sigma2(
    pos: np.ndarray, q: float, r: int, c: int, sigma2: float | None, tw_tolerance: float,
    max_iter: int,
) -> tuple[float, float]:
    """(sigma^2, spike threshold lambda_+ + tw_tolerance s_TW): sigma^2 given, or median
    matching on the sorted eigenvalues ``pos``, re-matched on the bulk below the threshold
    until the spike count is stable (at most ``max_iter`` times)."""
    med1 = float(mp_quantile(0.5, q))
    s2 = float(sigma2) if sigma2 is not None else float(np.median(pos)) / med1
    if not (math.isfinite(s2) and s2 > 0):
        raise ValueError(f"sigma2={sigma2!r} must be a positive finite number")
    thresh = mp_edges(q, s2)[1] + tw_tolerance * _tw_scale(r, c, s2)
    if sigma2 is not None:
        return s2, thresh
    nspk = int(np.sum(pos > thresh))
    for _ in range(max_iter):
        bulk = pos[pos <= thresh]
        if bulk.size < 3 or not float(np.median(bulk)) > 0:
            break
        # the dropped spikes are not MP eigenvalues: match the median of what is left
        s2_new = float(np.median(bulk)) / med1
        thresh = mp_edges(q, s2_new)[1] + tw_tolerance * _tw_scale(r, c, s2_new)
        s2 = s2_new
        new = int(np.sum(pos > thresh))
        if new == nspk:
            break
        nspk = new
    return s2, thresh
