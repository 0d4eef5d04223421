"""Null models for an ESD: a Marchenko-Pastur fit of the bulk and a randomized matrix.

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

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from jacspec._util.json import jsonable
from jacspec._util.random import numpy_generator
from jacspec._util.validation import positive_int

logger = logging.getLogger(__name__)

__all__ = [
    "MPFit",
    "RandomizedNull",
    "esd_distance",
    "fit_mp",
    "jensen_shannon_distance",
    "matrix_esd",
    "mp_density",
    "mp_edges",
    "mp_quantile",
    "randomized_null",
]

# ----------------------------------------------------------------------------- Marchenko-Pastur


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
    given); ``num_zeros``: those <= zero_tol * lambda_max (kept in the bulk's median).
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

    @property
    def settings(self) -> dict[str, Any]:
        """What the fit assumed: Q = rows / cols, the shape, the Tracy-Widom tolerance, method."""
        return {k: getattr(self, k) for k in ("Q", "rows", "cols", "tw_tolerance", "method")}

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


def fit_mp(
    eigenvalues: Any,
    Q: float,
    *,
    rows: int | None = None,
    sigma2: float | None = None,
    tw_tolerance: float = 3.0,
    zero_tol: float = 1e-10,
    max_iter: int = 20,
) -> MPFit:
    """Fit the Marchenko-Pastur bulk to ``eigenvalues`` of ``A A^T / rows`` with Q = rows/cols.

    ``eigenvalues``: all min(rows, cols) eigenvalues of the matrix (as WeightWatcher fits MP
    to the ESD of the full matrix), zeros included where they are eigenvalues of it; never
    only those above a rank tolerance, which for spiked spectra keeps just the top of the
    bulk. sigma^2 (unless given) is fitted robustly by median matching on the bulk: sigma^2 =
    median(bulk) / median(MP with sigma^2 = 1), where the bulk starts as every eigenvalue
    and is refined by dropping the eigenvalues above the spike threshold and re-matching (at
    most ``max_iter`` times, until the spike count is stable). The median is insensitive to
    a few spikes, unlike the mean or lambda_max. ``num_zeros`` counts the eigenvalues
    <= zero_tol * lambda_max (kept in the median); ValueError when the median is not
    positive (half the spectrum zero: no MP bulk to fit).

    Spikes: eigenvalues above ``lambda_plus + tw_tolerance * s_TW`` with s_TW the
    Tracy-Widom scale (Johnstone 2001; the largest null eigenvalue fluctuates by O(s_TW)
    around lambda_plus, TW1's 99th percentile is ~2.02 s_TW above its centre); the default
    3.0 leaves room for the sigma^2 estimate. ``rows``: the matrix's row count (n for the
    data Jacobian); if None, ``len(eigenvalues)`` is taken as min(rows, cols).
    """
    q = _check_q(Q)
    ev = np.asarray(eigenvalues, dtype=np.float64).ravel()
    if ev.size == 0:
        raise ValueError("eigenvalues is empty; need at least 3 positive eigenvalues")
    if not np.isfinite(ev).all():
        raise ValueError("eigenvalues contain NaN or inf")
    if not (tw_tolerance >= 0):
        raise ValueError(f"tw_tolerance={tw_tolerance!r} must be >= 0")
    lmax = float(ev.max())
    if not lmax > 0:
        raise ValueError("eigenvalues has no positive entry; cannot fit an MP bulk")
    if rows is None:
        small = ev.size
        r = int(round(small * q)) if q >= 1 else small
    else:
        r = positive_int("rows", rows)
    c = max(1, int(round(r / q)))
    if ev.size > min(r, c):  # the larger side's extra zeros are not part of the MP law
        ev = np.sort(ev)[::-1][: min(r, c)]
    num_zeros = int(np.sum(ev <= zero_tol * lmax))
    if ev.size - num_zeros < 3:
        raise ValueError(
            f"eigenvalues has {ev.size - num_zeros} positive entries; need at least 3"
        )
    pos = np.sort(np.clip(ev, 0.0, None))  # every eigenvalue: the bulk's median needs them all
    if not float(np.median(pos)) > 0:
        raise ValueError(
            f"{num_zeros} of {ev.size} eigenvalues are zero: the median is 0, no MP bulk to fit"
        )
    med1 = float(mp_quantile(0.5, q))

    method = "given" if sigma2 is not None else "median"
    bulk = pos
    s2 = float(sigma2) if sigma2 is not None else float(np.median(bulk)) / med1
    if not (math.isfinite(s2) and s2 > 0):
        raise ValueError(f"sigma2={sigma2!r} must be a positive finite number")
    thresh = mp_edges(q, s2)[1] + tw_tolerance * _tw_scale(r, c, s2)
    if sigma2 is None:
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
        method=method,
    )


# ----------------------------------------------------------------------------- randomized null


def _as_float64_matrix(A: Any, name: str = "A") -> np.ndarray:
    """numpy float64 2-D copy-free view of a numpy array or torch tensor."""
    if hasattr(A, "detach") and hasattr(A, "cpu"):  # torch.Tensor, without importing torch
        A = A.detach().cpu().double().numpy()
    try:
        arr = np.asarray(A, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a 2-D numpy array or torch tensor") from err
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows x cols); got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty; got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def matrix_esd(A: Any, *, scale: str = "n") -> np.ndarray:
    """Eigenvalues (descending, float64) of A A^T / rows via the smaller Gram side.

    scale="n" divides by rows (jacspec's default M/n), "none" gives the raw A A^T. The
    smaller side is used (:func:`jacspec.spectra.gram.gram_side`: A^T A if cols <= rows): the
    min(rows, cols) returned eigenvalues are the nonzero spectrum of either side. Round-off
    negatives are set to 0 (the one exact eigensolve,
    :func:`jacspec.spectra.eigen.exact_eigenvalues`, float64 rule).
    """
    from jacspec._util.validation import check_choice
    from jacspec.spectra.eigen import SCALES, exact_eigenvalues
    from jacspec.spectra.gram import gram_side

    check_choice("scale", scale, SCALES)
    a = _as_float64_matrix(A)
    rows, cols = a.shape
    g = a.T @ a if gram_side("auto", rows, cols) == "dual" else a @ a.T
    return exact_eigenvalues(g, n=rows, scale=scale, dtype="float64").values


def _auto_bins(n: int) -> int:
    """Default histogram size: round(sqrt(n)) clipped to [10, 100]."""
    return int(min(100, max(10, round(math.sqrt(n)))))


def esd_distance(
    a: Any, b: Any, *, bins: int | None = None, log_bins: bool = True, zero_tol: float = 1e-10
) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) between the histograms of two ESDs.

    Both samples are binned on the same bins (``bins=None``: round(sqrt(n)) clipped to
    [10, 100], n the smaller sample size): ``bins`` bins equally spaced in log10 between
    the smallest and the largest positive eigenvalue of either sample (``log_bins=True``,
    suited to heavy tails), or linearly between 0 and the largest (``log_bins=False``, as
    WeightWatcher's histogram); eigenvalues <= zero_tol * max are counted in one extra
    "zero" bin in the log case. Histograms are normalised to probabilities p, q and
    JSD = sqrt((KL(p||m) + KL(q||m)) / 2), m = (p + q)/2, logs base 2. 0 = same histogram.
    Finite samples put a floor under it (two independent 300 x 800 Gaussian matrices give
    ~0.15 with 100 bins, less with the default 17); compare ESDs of similar size.
    """
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if x.size == 0 or y.size == 0:
        raise ValueError("esd_distance needs two non-empty eigenvalue arrays")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("esd_distance: eigenvalues contain NaN or inf")
    if bins is None:
        bins = _auto_bins(min(x.size, y.size))
    bins = positive_int("bins", bins)
    top = max(float(x.max()), float(y.max()))
    if not top > 0:
        return 0.0
    tol = zero_tol * top
    if log_bins:
        px, py = x[x > tol], y[y > tol]
        low = min(px.min() if px.size else top, py.min() if py.size else top)
        if top > low:
            edges = np.geomspace(low, top, int(bins) + 1)
        else:
            edges = np.array([low, top * 1.0001])
        hx = np.concatenate([[np.sum(x <= tol)], np.histogram(px, bins=edges)[0]])
        hy = np.concatenate([[np.sum(y <= tol)], np.histogram(py, bins=edges)[0]])
    else:
        edges = np.linspace(0.0, top, int(bins) + 1)
        hx = np.histogram(np.clip(x, 0.0, None), bins=edges)[0]
        hy = np.histogram(np.clip(y, 0.0, None), bins=edges)[0]
    p = hx / hx.sum()
    q = hy / hy.sum()
    m = 0.5 * (p + q)

    def kl(u: np.ndarray) -> float:
        nz = u > 0
        return float(np.sum(u[nz] * np.log2(u[nz] / m[nz])))

    return float(math.sqrt(max(0.0, 0.5 * (kl(p) + kl(q)))))


def jensen_shannon_distance(a: Any, b: Any) -> float:
    """WeightWatcher's ``rand_distance``: Jensen-Shannon distance between two eigenvalue
    *vectors* (no histogram), natural log, in [0, sqrt(ln 2)].

    Both are sorted ascending and aligned entry by entry (same length): p = a / sum a,
    q = b / sum b, m = (a + b) / sum(a + b) (= (p + q)/2 when the sums agree, as for a matrix
    and its entry shuffle), distance = sqrt((KL(p||m) + KL(q||m)) / 2). This is
    ``weightwatcher.RMT_Util.jensen_shannon_distance`` (scipy.stats.entropy normalises).
    """
    x = np.sort(np.clip(np.asarray(a, dtype=np.float64).ravel(), 0.0, None))
    y = np.sort(np.clip(np.asarray(b, dtype=np.float64).ravel(), 0.0, None))
    if x.size == 0 or x.size != y.size:
        raise ValueError(
            f"jensen_shannon_distance needs two eigenvalue vectors of the same non-zero length;"
            f" got {x.size} and {y.size}"
        )
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("jensen_shannon_distance: eigenvalues contain NaN or inf")
    if not (x.sum() > 0 and y.sum() > 0):
        raise ValueError("jensen_shannon_distance: an eigenvalue vector sums to 0")
    p, q = x / x.sum(), y / y.sum()
    m = (x + y) / (x.sum() + y.sum())

    def kl(u: np.ndarray) -> float:
        nz = u > 0
        return float(np.sum(u[nz] * np.log(u[nz] / m[nz])))

    return float(math.sqrt(max(0.0, 0.5 * (kl(p) + kl(q)))))


@dataclass(frozen=True)
class RandomizedNull:
    """The ESD of a matrix and of the same matrix with its entries shuffled.

    ``eigenvalues``/``rand_eigenvalues``: descending float64 spectra (same side and scale).
    WeightWatcher's columns, with WeightWatcher's meaning:
    ``rand_distance``: :func:`jensen_shannon_distance` between the sorted, normalised
    eigenvalue vectors; ``num_traps``: Marchenko-Pastur spikes of the *randomized* ESD
    (:func:`fit_mp` with Q = rows/cols; -1 if no MP fit could be made; WeightWatcher fits
    the bulk by its own procedure, so counts can differ by a few); ``rand_lambda_max``.
    jacspec's own columns: ``num_above_rand_max``/``above_rand_max_values``: real
    eigenvalues above the randomized lambda_max (structure the shuffle destroys; named
    ``num_traps`` before jacspec 0.2); ``rand_hist_jsd``: :func:`esd_distance`, a
    Jensen-Shannon distance between histograms (depends on ``bins``/``log_bins``; named
    ``rand_distance`` before jacspec 0.2).
    """

    eigenvalues: np.ndarray = field(repr=False, compare=False)
    rand_eigenvalues: np.ndarray = field(repr=False, compare=False)
    lambda_max: float
    rand_lambda_max: float
    rand_distance: float
    num_traps: int
    num_above_rand_max: int
    above_rand_max_values: tuple[float, ...]
    rand_hist_jsd: float
    seed: int | None
    scale: str
    shape: tuple[int, int]
    bins: int
    log_bins: bool

    @property
    def settings(self) -> dict[str, Any]:
        """What produced the comparison: shuffle seed, ESD scale, matrix shape, histogram bins."""
        return {k: getattr(self, k) for k in ("seed", "scale", "shape", "bins", "log_bins")}

    def summary(self) -> dict[str, Any]:
        """Headline numbers: both lambda_max, the distances and the spike counts."""
        keys = ("lambda_max", "rand_lambda_max", "rand_distance", "num_traps",
                "num_above_rand_max", "rand_hist_jsd")
        return jsonable({k: getattr(self, k) for k in keys})

    def to_dict(self, *, eigenvalues: bool = False) -> dict[str, Any]:
        """JSON-able dict; the spectra themselves only with ``eigenvalues=True``."""
        d = {
            k: v
            for k, v in self.__dict__.items()
            if k not in ("eigenvalues", "rand_eigenvalues")
        }
        if eigenvalues:
            d["eigenvalues"] = self.eigenvalues
            d["rand_eigenvalues"] = self.rand_eigenvalues
        return jsonable(d)

    def to_frame(self) -> Any:
        """The two spectra side by side: columns ``eigenvalue`` and ``rand_eigenvalue``."""
        import pandas as pd

        return pd.concat([pd.Series(self.eigenvalues, name="eigenvalue"),
                          pd.Series(self.rand_eigenvalues, name="rand_eigenvalue")], axis=1)

    def plot(self, **kwargs: Any) -> Any:
        """Figure of both ESDs (:func:`jacspec.report.esd_plots.plot_randomized_esd`)."""
        from jacspec.report.esd_plots import plot_randomized_esd

        return plot_randomized_esd(self, **kwargs)


def shuffle_entries(A: Any, seed: int | np.random.Generator | None = 0) -> np.ndarray:
    """A copy of A (float64) with its entries permuted:
    ``A.ravel()[default_rng(seed).permutation(A.size)].reshape(A.shape)``."""
    a = _as_float64_matrix(A)
    rng = numpy_generator(seed)
    return a.ravel()[rng.permutation(a.size)].reshape(a.shape)


def randomized_null(
    A: Any,
    *,
    seed: int | np.random.Generator | None = 0,
    scale: str = "n",
    bins: int | None = None,
    log_bins: bool = True,
    eigenvalues: Any | None = None,
) -> RandomizedNull:
    """Compare the ESD of ``A`` (rows x cols, numpy or torch; e.g. the data Jacobian) with
    the ESD of A with its entries shuffled by ``np.random.default_rng(seed).permutation``.

    Both spectra are the eigenvalues of R R^T / rows (scale="n") computed on the smaller
    side (:func:`matrix_esd`), in float64. The same seed gives the same numbers; ``seed``
    may be an int or a numpy Generator (then ``seed`` is reported as None).
    """
    a = _as_float64_matrix(A)
    if eigenvalues is None:
        ev = matrix_esd(a, scale=scale)
    else:  # the caller's exact ESD of the same matrix and scale (saves one eigensolve)
        ev = np.sort(np.asarray(eigenvalues, dtype=np.float64).ravel())[::-1]
    r = shuffle_entries(a, seed)
    rev = matrix_esd(r, scale=scale)
    rmax = float(rev[0])
    above = ev[ev > rmax]
    rows, cols = a.shape
    try:
        rand_spikes = fit_mp(rev, rows / cols, rows=rows).num_spikes
    except ValueError:
        rand_spikes = -1
    try:
        distance = jensen_shannon_distance(ev[: rev.size], rev)
    except ValueError:
        distance = float("nan")
    return RandomizedNull(
        eigenvalues=ev,
        rand_eigenvalues=rev,
        lambda_max=float(ev[0]),
        rand_lambda_max=rmax,
        rand_distance=distance,
        num_traps=int(rand_spikes),
        num_above_rand_max=int(above.size),
        above_rand_max_values=tuple(float(v) for v in above),
        rand_hist_jsd=esd_distance(ev, rev, bins=bins, log_bins=log_bins),
        seed=None if isinstance(seed, np.random.Generator) else seed,
        scale=scale,
        shape=(int(rows), int(cols)),
        bins=int(bins) if bins is not None else _auto_bins(ev.size),
        log_bins=bool(log_bins),
    )
