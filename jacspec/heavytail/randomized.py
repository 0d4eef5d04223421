"""The randomized null of an ESD: the spectrum of the same matrix with its entries shuffled
(:func:`randomized_null`, :class:`RandomizedNull`), and the distances between two ESDs
WeightWatcher and jacspec report (:func:`jensen_shannon_distance`, :func:`esd_distance`).

Spectra are those of ``A A^T / rows`` (jacspec's default ``scale="n"``) for ``A`` of
``rows x cols``, computed on the smaller Gram side in float64 (:func:`matrix_esd`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from jacspec._util.json import jsonable
from jacspec._util.random import numpy_generator
from jacspec._util.validation import positive_int
from jacspec.heavytail.mp import fit_mp

__all__ = [
    "RandomizedNull",
    "esd_distance",
    "jensen_shannon_distance",
    "matrix_esd",
    "randomized_null",
    "shuffle_entries",
]


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


def _matrix_eigen(a: np.ndarray, scale: str, dtype: str = "float64") -> Any:
    """:class:`~jacspec.spectra.eigen.ExactEigenvalues` of ``a a^T / rows`` (smaller side)."""
    from jacspec._util.validation import check_choice
    from jacspec.spectra.eigen import SCALES, exact_eigenvalues
    from jacspec.spectra.gram import gram_side

    check_choice("scale", scale, SCALES)
    rows, cols = a.shape
    g = a.T @ a if gram_side("auto", rows, cols) == "dual" else a @ a.T
    return exact_eigenvalues(g, n=rows, scale=scale, dtype=dtype)


def matrix_esd(A: Any, *, scale: str = "n") -> np.ndarray:
    """Eigenvalues (descending, float64) of A A^T / rows via the smaller Gram side.

    scale="n" divides by rows (jacspec's default M/n), "none" gives the raw A A^T. The
    smaller side is used (:func:`jacspec.spectra.gram.gram_side`: A^T A if cols <= rows): the
    min(rows, cols) returned eigenvalues are the nonzero spectrum of either side. Round-off
    negatives are set to 0 (the one exact eigensolve,
    :func:`jacspec.spectra.eigen.exact_eigenvalues`, float64 rule).
    """
    return _matrix_eigen(_as_float64_matrix(A), scale).values


def _entry_dtype(A: Any) -> str:
    """"float32" when ``A`` (numpy or torch) holds float32 entries (a float32 Jacobian's
    round-off sets the rank tolerance), else "float64"."""
    return "float32" if "float32" in str(getattr(A, "dtype", "")) else "float64"


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
    eig_tol: float | None = None,
) -> RandomizedNull:
    """Compare the ESD of ``A`` (rows x cols, numpy or torch; e.g. the data Jacobian) with
    the ESD of A with its entries shuffled by ``np.random.default_rng(seed).permutation``.

    Both spectra are the eigenvalues of R R^T / rows (scale="n") computed on the smaller
    side (:func:`matrix_esd`), in float64. Eigenvalues below the rank tolerance
    (:func:`jacspec.spectra.eigen.rank_tolerance`; float32 entries of ``A`` use the float32
    rule, the shuffled matrix, exact in float64, the float64 one) are zeros in both spectra
    and in the randomized MP fit (``num_traps``). ``eigenvalues``/``eig_tol``: the caller's
    exact ESD of ``A`` at this scale and its rank tolerance (None: the rule on them). The
    same seed gives the same numbers; ``seed`` may be an int or a numpy Generator (then
    ``seed`` is reported as None).
    """
    from jacspec.spectra.eigen import zero_below_tolerance

    a = _as_float64_matrix(A)
    if eigenvalues is None:
        real = _matrix_eigen(a, scale, _entry_dtype(A))
        ev, eig_tol = real.values, real.tol
    else:  # the caller's exact ESD of the same matrix and scale (saves one eigensolve)
        ev = np.sort(np.asarray(eigenvalues, dtype=np.float64).ravel())[::-1]
    ev = zero_below_tolerance(ev, eig_tol, dtype=_entry_dtype(A))[0]
    r = shuffle_entries(a, seed)
    shuffled = _matrix_eigen(r, scale)  # exact in float64: the shuffle is its own matrix
    rev = zero_below_tolerance(shuffled.values, shuffled.tol)[0]
    rmax = float(rev[0])
    above = ev[ev > rmax]
    rows, cols = a.shape
    try:
        rand_spikes = fit_mp(rev, rows / cols, rows=rows, tol=shuffled.tol).num_spikes
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
