"""Power-law fits of an eigenvalue sample (Clauset, Shalizi & Newman 2009), vectorised.

Continuous power law ``p(x) = (alpha - 1)/xmin * (x/xmin)^-alpha`` for ``x >= xmin``.
For a candidate ``xmin`` with tail ``x_1..x_m >= xmin`` the maximum-likelihood exponent is
``alpha = 1 + m / sum_i ln(x_i / xmin)`` with standard error ``sigma = (alpha - 1)/sqrt(m)``.
``xmin`` is the candidate whose fit has the smallest Kolmogorov-Smirnov distance

    D = sup_x |F_m(x) - (1 - (x/xmin)^(1 - alpha))|

between the empirical CDF ``F_m`` of the tail and the fitted CDF (the exact two-sided sup,
``max_j max(F(x_j) - (j-1)/m, j/m - F(x_j))`` over the sorted tail; ties are exact too).

Sorted values and suffix sums of logs give alpha for every candidate in O(n). The KS scan
is O(m) per candidate, evaluated for blocks of candidates at once with numpy broadcasting
over the triangle ``j >= i``. Computing every D would cost ~n^2/2 exp()s; instead the
minimiser is found exactly by branch-and-bound: a cheap lower bound on each D (every s-th
tail point plus a few exact points around the coarse maximum) is compared with the exact D
of the most promising candidates, and only candidates whose bound is not above the best D
found are scanned exactly (strides 256, 32, 4). The result is the plain CSN argmin over
all candidates; typically a handful of candidates survive, so 8k values take ~30 ms.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import numpy as np

from jacspec._util.json import jsonable
from jacspec.heavytail.ks import candidates, ks_distances, peak_window, scan

logger = logging.getLogger(__name__)

__all__ = [
    "PowerLawFit",
    "fit_powerlaw",
    "ks_distances",
]

#: The ``fingers="clip"`` search stops, accepting nothing, once a refit's alpha is at or
#: below this (WeightWatcher's clip_xmax rule).
FINGERS_STOP_ALPHA = 2.0


#: Fields of :class:`PowerLawFit` that are options of the fit, not results.
_FIT_SETTINGS = ("exact", "distribution", "xmin_window", "fingers", "max_fingers",
                 "finger_thresh", "min_tail", "max_candidates")


@dataclass(frozen=True)
class PowerLawFit:
    """Result of :func:`fit_powerlaw`: the fitted numbers and the settings that produced them.

    ``alpha``, ``xmin``, ``D`` (KS distance), ``sigma`` (standard error of alpha),
    ``num_pl_spikes`` (tail size m = #values >= xmin used in the fit), ``xmax`` (largest
    value in the fit), ``lambda_`` (exponential cutoff rate of the truncated law; 0.0 for a
    pure power law), ``num_fingers`` (largest values dropped by the ``fingers`` guard),
    ``raw_alpha`` (alpha before the guard), ``num_values`` (positive values considered),
    ``num_zeros`` (exact zeros excluded), ``num_candidates`` (xmin candidates scanned),
    ``warning`` ("": kept for WeightWatcher's column layout; WeightWatcher's alpha < 2
    "over-trained" / alpha > 6 "under-trained" labels are calibrated on weight matrices, and
    jacspec, whose spectra are Jacobian ESDs, does not give them).
    """

    alpha: float
    xmin: float
    xmax: float
    D: float
    sigma: float
    num_pl_spikes: int
    lambda_: float
    warning: str
    num_fingers: int
    raw_alpha: float
    num_values: int
    num_zeros: int
    num_candidates: int
    exact: bool
    distribution: str
    xmin_window: tuple[float, float] | None
    fingers: str | None
    max_fingers: int
    finger_thresh: float
    min_tail: int
    max_candidates: int | None

    @property
    def settings(self) -> dict[str, Any]:
        """The options of :func:`fit_powerlaw` that produced this fit."""
        return {k: getattr(self, k) for k in _FIT_SETTINGS}

    def summary(self) -> dict[str, Any]:
        """Headline numbers: alpha, its standard error, the tail and the KS distance."""
        keys = ("alpha", "sigma", "xmin", "xmax", "D", "num_pl_spikes", "lambda_", "warning")
        return jsonable({k: getattr(self, k) for k in keys})

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of every field (NaN written as None)."""
        return jsonable(asdict(self))

    def to_frame(self):
        """One-row pandas DataFrame of :meth:`to_dict`."""
        import pandas as pd

        return pd.DataFrame([self.to_dict()])

    def pdf(self, x: np.ndarray) -> np.ndarray:
        """Fitted density at ``x`` (0 below xmin); truncated law included."""
        x = np.asarray(x, dtype=np.float64)
        out = np.zeros_like(x)
        above = x >= self.xmin
        u = x[above] / self.xmin
        if self.distribution == "truncated_power_law" and self.lambda_ > 0:
            lam = self.lambda_ * self.xmin
            z = _tpl_norm(self.alpha, lam)
            out[above] = u ** (-self.alpha) * np.exp(-lam * (u - 1.0)) / (z * self.xmin)
        else:
            out[above] = (self.alpha - 1.0) / self.xmin * u ** (-self.alpha)
        return out


# ----------------------------------------------------------------------------- core scan


def _prepare(values: Any) -> tuple[np.ndarray, int]:
    """Sorted positive float64 values and the number of exact zeros; ValueError on bad input."""
    try:
        x = np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"values must be an array of real numbers; got {type(values).__name__}"
        ) from err
    if np.isnan(x).any():
        raise ValueError("values contain NaN; pass finite eigenvalues")
    if np.isinf(x).any():
        raise ValueError("values contain inf; pass finite eigenvalues")
    if (x < 0).any():
        raise ValueError(
            f"values contain {int((x < 0).sum())} negative entries (min {x.min():.3g}); "
            "a power law needs values >= 0 (clip eigenvalue noise first)"
        )
    num_zeros = int((x == 0).sum())
    return np.sort(x[x > 0]), num_zeros


# ----------------------------------------------------------------------------- truncated law


def _tpl_norm(alpha: float, lam: float) -> float:
    """Z(alpha, lam) = int_1^inf u^-alpha exp(-lam (u - 1)) du (lam = lambda * xmin)."""
    from scipy.integrate import quad

    if lam <= 0:
        return 1.0 / (alpha - 1.0) if alpha > 1 else math.inf

    # u = e^t: integrand exp((1 - alpha) t - lam (e^t - 1)), smooth and decaying.
    def f(t: float) -> float:
        if t > 700.0:
            return 0.0
        return math.exp((1.0 - alpha) * t - lam * math.expm1(t))

    val, _ = quad(f, 0.0, math.inf, limit=200, epsabs=0.0, epsrel=1e-10)
    return val


def _tpl_survival(alpha: float, lam: float, u: np.ndarray) -> np.ndarray:
    """P(U > u) of the truncated law on [1, inf) at sorted ``u`` (cumulative integration
    of the log-space integrand between consecutive points, Gauss-Legendre per segment)."""
    z = _tpl_norm(alpha, lam)
    t = np.log(u)
    nodes, weights = np.polynomial.legendre.leggauss(16)
    grid = np.concatenate(([0.0], t))
    a, b = grid[:-1], grid[1:]
    half = 0.5 * (b - a)
    tt = (0.5 * (a + b))[:, None] + half[:, None] * nodes[None, :]
    vals = np.exp((1.0 - alpha) * tt - lam * np.expm1(tt))
    seg = half * (vals @ weights)
    cdf = np.cumsum(seg) / z
    return np.clip(1.0 - cdf, 0.0, 1.0)


def _fit_tpl(tail: np.ndarray, xmin: float, alpha0: float) -> tuple[float, float, float]:
    """MLE (alpha, lambda) of p(x) ∝ x^-alpha e^{-lambda x} on [xmin, inf); returns alpha,
    lambda and the KS distance. Negative log-likelihood per point with u = x/xmin:
    ln Z(alpha, lam) + alpha * mean ln u + lam * mean(u - 1) (+ ln xmin)."""
    from scipy.optimize import minimize

    u = tail / xmin
    mlog = float(np.mean(np.log(u)))
    mu1 = float(np.mean(u - 1.0))

    def nll(p: np.ndarray) -> float:
        a, eta = float(p[0]), float(p[1])
        lam = math.exp(eta)
        z = _tpl_norm(a, lam)
        if not (z > 0 and math.isfinite(z)):
            return 1e300
        return math.log(z) + a * mlog + lam * mu1

    best = None
    lam_starts = [1e-3 / max(mu1, 1e-12), 1.0 / max(mu1, 1e-12)]
    for lam0 in lam_starts:
        p0 = np.array([min(max(alpha0, 0.0), 15.0) if np.isfinite(alpha0) else 2.0,
                       math.log(max(lam0, 1e-10))])
        r = minimize(nll, p0, method="L-BFGS-B",
                     bounds=[(-5.0, 20.0), (math.log(1e-10), math.log(1e6))])
        if best is None or r.fun < best.fun:
            best = r
    assert best is not None
    a, lam = float(best.x[0]), math.exp(float(best.x[1]))
    s = _tpl_survival(a, lam, u)
    m = u.size
    j = np.arange(m, dtype=np.float64)
    cdf = 1.0 - s
    d = float(np.max(np.maximum(cdf - j / m, (j + 1) / m - cdf)))
    return a, lam / xmin, d


# ----------------------------------------------------------------------------- public API


def fit_powerlaw(
    values: Any,
    *,
    xmin: float | None = None,
    xmin_candidates: str | Any = "all",
    max_candidates: int | None = None,
    min_tail: int = 10,
    xmax: float | None = None,
    distribution: str = "power_law",
    xmin_window: None | str | tuple[float, float] = None,
    fingers: str | None = None,
    max_fingers: int = 10,
    finger_thresh: float = 1.0,
) -> PowerLawFit:
    """Fit a continuous power law (or one with an exponential cutoff) to the tail of ``values``.

    values: 1-D array (eigenvalues). Exact zeros are excluded from the fit (``num_zeros``
    reports them); NaN, inf or negative entries raise ValueError; fewer than ``min_tail``
    positive values (after ``xmax``) raise ValueError.

    xmin: fix xmin (the tail is every value >= xmin); None searches it by smallest KS
    distance over ``xmin_candidates="all"`` distinct values whose tail has >= ``min_tail``
    points, or over an array of candidate values, each snapped up to the smallest data
    value >= it (the same rule, restricted). ``max_candidates``: if set and exceeded, scan
    that many candidates evenly spaced in rank plus every candidate between the coarse
    winner's neighbours (approximate; the result carries ``exact=False``). Default None:
    exact CSN over all candidates (the branch-and-bound scan keeps this fast).
    xmax: drop values > xmax before fitting (WeightWatcher's clipping; the law itself is
    unbounded). ``.xmax`` reports the largest value fitted.
    distribution: "power_law" or "truncated_power_law" (p ∝ x^-alpha e^{-lambda x}; xmin is
    chosen by the power-law scan, then (alpha, lambda) are fitted by numerical MLE at that
    xmin and D is the truncated law's KS distance).
    xmin_window: None, "peak" (WeightWatcher's xmin_peak: the peak p of a 100-bin log10
    histogram, xmin searched in [0.95 p, 1.5 p]) or (lo, hi) to search xmin in [lo, hi].
    fingers: None or "clip" (WeightWatcher's clip_xmax rule): for k = 1..max_fingers refit
    (xmin searched again) without the k largest values; accept the first k with
    alpha_k + finger_thresh < alpha_0 (the few top values were pushing the KS choice to a
    tiny, steep tail); stop early, accepting nothing, once alpha_k <= 2. D is not part of
    the rule: clipping the top of a tail almost always raises D a little, so a D criterion
    never fires. ``raw_alpha`` keeps alpha_0; ``num_fingers`` the accepted k.
    """
    cand_values = _check_fit_options(distribution, xmin_candidates, fingers, min_tail,
                                     max_candidates, max_fingers)
    x, num_zeros = _fit_values(values, xmax, min_tail)
    window = _xmin_window(x, xmin_window)

    one_fit = partial(_one_fit, xmin=xmin, min_tail=min_tail, window=window,
                      cand_values=cand_values, max_candidates=max_candidates)
    first = one_fit(x)
    best, num_fingers = first, 0
    if fingers == "clip":
        best, num_fingers = _clip_fingers(x, one_fit, first, int(max_fingers),
                                          finger_thresh, min_tail)
    ncand, exact = best[3], best[4]
    fitted_xmin, tail, alpha, lam, d = _final_tail(x[:-num_fingers] if num_fingers else x,
                                                   best, xmin, distribution)
    m = int(tail.size)
    return PowerLawFit(
        alpha=float(alpha),
        xmin=fitted_xmin,
        xmax=float(tail[-1]),
        D=float(d),
        sigma=float((alpha - 1.0) / math.sqrt(m)),
        num_pl_spikes=m,
        lambda_=float(lam),
        warning="",
        num_fingers=int(num_fingers),
        raw_alpha=float(first[1]),
        num_values=int(x.size),
        num_zeros=num_zeros,
        num_candidates=int(ncand),
        exact=bool(exact),
        distribution=distribution,
        xmin_window=window,
        fingers=fingers,
        max_fingers=int(max_fingers),
        finger_thresh=float(finger_thresh),
        min_tail=int(min_tail),
        max_candidates=None if max_candidates is None else int(max_candidates),
    )


#: One fit at one xmin: (index of xmin in the sorted data, alpha, KS distance D, number of
#: candidates scanned, whether the scan was exact).
_OneFit = tuple[int, float, float, int, bool]


def _one_fit(
    data: np.ndarray, *, xmin: float | None, min_tail: int,
    window: tuple[float, float] | None, cand_values: np.ndarray | None,
    max_candidates: int | None,
) -> _OneFit:
    """The fit at the given ``xmin``, else at the CSN-searched one."""
    if xmin is not None:
        return _fit_at_xmin(data, xmin)
    return _fit_searched(data, min_tail, window, cand_values, max_candidates)


def _final_tail(
    data: np.ndarray, best: _OneFit, xmin: float | None, distribution: str
) -> tuple[float, np.ndarray, float, float, float]:
    """(xmin, tail, alpha, lambda, D) of the chosen fit; for ``"truncated_power_law"``
    (alpha, lambda, D) refitted by MLE at that xmin (lambda 0.0 otherwise)."""
    i, alpha, d = best[0], best[1], best[2]
    fitted_xmin = float(xmin) if xmin is not None else float(data[i])
    tail = data[i:]
    lam = 0.0
    if distribution == "truncated_power_law":
        alpha, lam, d = _fit_tpl(tail, fitted_xmin, alpha)
    return fitted_xmin, tail, alpha, lam, d


def _check_fit_options(
    distribution: str, xmin_candidates: Any, fingers: str | None, min_tail: Any,
    max_candidates: Any, max_fingers: Any,
) -> np.ndarray | None:
    """Validate :func:`fit_powerlaw`'s options; returns the candidate array (None: "all")."""
    from jacspec._util.validation import check_choice, positive_int

    check_choice("distribution", distribution, ("power_law", "truncated_power_law"))
    cand_values: np.ndarray | None = None
    if isinstance(xmin_candidates, str):
        check_choice("xmin_candidates", xmin_candidates, ("all",))
    else:
        try:
            cand_values = np.asarray(xmin_candidates, dtype=np.float64).ravel()
        except (TypeError, ValueError) as err:
            raise TypeError("xmin_candidates must be 'all' or an array of numbers") from err
        if cand_values.size == 0 or not np.isfinite(cand_values).all():
            raise ValueError("xmin_candidates must be 'all' or a non-empty finite array")
    if fingers is not None:
        check_choice("fingers", fingers, ("clip",))
    if not isinstance(min_tail, (int, np.integer)) or min_tail < 2:
        raise ValueError(f"min_tail={min_tail!r} must be an integer >= 2")
    if max_candidates is not None and (
        not isinstance(max_candidates, (int, np.integer)) or max_candidates < 3
    ):
        raise ValueError(f"max_candidates={max_candidates!r} must be None or an integer >= 3")
    positive_int("max_fingers", max_fingers)
    return cand_values


def _fit_values(values: Any, xmax: float | None, min_tail: int) -> tuple[np.ndarray, int]:
    """The sorted positive values at or below ``xmax`` and the number of exact zeros;
    ValueError when fewer than ``min_tail`` remain."""
    x, num_zeros = _prepare(values)
    if num_zeros:
        logger.debug("fit_powerlaw: %d exact zeros excluded", num_zeros)
    if xmax is not None:
        if not (np.isfinite(xmax) and xmax > 0):
            raise ValueError(f"xmax={xmax!r} must be a positive finite number or None")
        x = x[x <= xmax]
    if x.size < min_tail:
        raise ValueError(
            f"values has {x.size} positive entries (after xmax); need at least min_tail={min_tail}"
        )
    return x, num_zeros


def _xmin_window(x: np.ndarray, xmin_window: Any) -> tuple[float, float] | None:
    """The interval xmin is searched in: None (everywhere), WeightWatcher's peak window of
    ``x`` (``"peak"``) or a given (lo, hi) pair."""
    from jacspec._util.validation import check_choice

    if xmin_window is None:
        return None
    if isinstance(xmin_window, str):
        check_choice("xmin_window", xmin_window, ("peak",))
        return peak_window(x)
    try:
        lo, hi = (float(v) for v in xmin_window)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"xmin_window={xmin_window!r} must be None, 'peak' or a (lo, hi) pair"
        ) from err
    if not lo <= hi:
        raise ValueError(f"xmin_window={xmin_window!r} needs lo <= hi")
    return (lo, hi)


def _fit_at_xmin(data: np.ndarray, xmin: float) -> _OneFit:
    """The fit at a given xmin: alpha = 1 + m / sum_i ln(x_i / xmin) over the m values >=
    xmin and the exact two-sided KS distance of that tail."""
    if not (np.isfinite(xmin) and xmin > 0):
        raise ValueError(f"xmin={xmin!r} must be a positive finite number or None")
    i = int(np.searchsorted(data, xmin, side="left"))
    if data.size - i < 2:
        raise ValueError(f"xmin={xmin!r} leaves fewer than 2 values in the tail")
    logd = np.log(data)
    # alpha uses the given xmin, not the first tail value
    m = data.size - i
    denom = float(np.sum(logd[i:]) - m * math.log(xmin))
    if not denom > 0:
        raise ValueError(f"xmin={xmin!r}: all tail values equal xmin; alpha undefined")
    a = 1.0 + m / denom
    u = logd[i:] - math.log(xmin)
    cdf = -np.expm1((1.0 - a) * u)
    j = np.arange(m, dtype=np.float64)
    d = float(np.max(np.maximum(cdf - j / m, (j + 1) / m - cdf)))
    return i, a, d, 1, True


def _fit_searched(
    data: np.ndarray, min_tail: int, window: tuple[float, float] | None,
    cand_values: np.ndarray | None, max_candidates: int | None,
) -> _OneFit:
    """The CSN fit: the candidate xmin (in ``window``, snapped ``cand_values`` if given)
    with the smallest KS distance (:func:`jacspec.heavytail.ks.scan`)."""
    idx = candidates(data, min_tail, window)
    if cand_values is not None:
        snapped = np.searchsorted(data, cand_values, side="left")
        idx = np.intersect1d(idx, snapped)
    if idx.size == 0:
        raise ValueError(
            f"no xmin candidate: window {window} or min_tail={min_tail} excludes every value"
        )
    return scan(data, idx, max_candidates)


def _clip_fingers(
    x: np.ndarray, one_fit: Any, first: _OneFit, max_fingers: int, finger_thresh: float,
    min_tail: int,
) -> tuple[_OneFit, int]:
    """WeightWatcher's clip_xmax rule: the refit without the k largest values for the first
    k <= ``max_fingers`` with alpha_k + finger_thresh < alpha_0, and k; else ``first``, 0
    (stopping at alpha_k <= :data:`FINGERS_STOP_ALPHA`, a failed refit or too short a tail)."""
    raw_alpha = first[1]
    for k in range(1, max_fingers + 1):
        if x.size - k < min_tail:
            break
        try:
            fit_k = one_fit(x[:-k])
        except ValueError:
            break
        if fit_k[1] + finger_thresh < raw_alpha:
            return fit_k, k
        if fit_k[1] <= FINGERS_STOP_ALPHA:
            break
    return first, 0
