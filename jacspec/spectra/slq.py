"""Stochastic Lanczos quadrature, spectral densities and distances between spectra.

- :func:`slq`: stochastic Lanczos quadrature. For a unit start vector v and T = U diag(θ) U^T,
  v^T f(A) v ≈ sum_j τ_j f(θ_j), τ_j = U_{1j}^2; averaging over random v estimates
  tr f(A) / dim, i.e. the ESD ≈ (1/s) sum_i sum_j τ_ij δ(λ - θ_ij).
- :func:`spectral_density`: Gaussian broadening of quadrature nodes (or exact eigenvalues)
  onto a grid; :func:`slq_density` both in one call.
- :func:`discrete_cdf`, :func:`cdf_distance`: CDF of a weighted discrete law and the
  Kolmogorov-Smirnov distance between two of them.

A is any symmetric operator :func:`jacspec.spectra.operators.as_operator` accepts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from jacspec._util.json import jsonable
from jacspec._util.validation import positive_int
from jacspec.spectra.lanczos import (
    SeedLike,
    TopEigenvalues,
    lanczos,
    random_vectors,
    rayleigh_ritz,
    ritz,
    seed_repr,
)
from jacspec.spectra.operators import as_operator
from jacspec.spectra.options import (
    DensityOptions,
    SLQOptions,
    resolve_density_options,
    resolve_slq_options,
    split_spectrum_fields,
)

__all__ = [
    "LanczosQuadrature",
    "SpectralDensity",
    "cdf_distance",
    "discrete_cdf",
    "slq",
    "slq_density",
    "slq_with",
    "spectral_density",
]


def discrete_cdf(nodes: np.ndarray, weights: np.ndarray, x: np.ndarray | float) -> np.ndarray:
    """Step CDF ``F(x) = sum_{nodes_i <= x} weights_i`` of a discrete measure."""
    order = np.argsort(nodes)
    cum = np.concatenate([[0.0], np.cumsum(weights[order])])
    return cum[np.searchsorted(nodes[order], np.asarray(x, dtype=float), side="right")]



# --------------------------------------------------------------------------- SLQ


@dataclass(frozen=True)
class LanczosQuadrature:
    """SLQ nodes/weights: ESD ≈ (1/s) sum_i sum_j weights[i, j] δ(λ - nodes[i, j]).

    Row i belongs to start vector i; unused entries have node NaN and weight 0. ``quad_forms``
    are v_i^T A v_i (Hutchinson samples from the same vectors); ``trace`` their mean.
    """

    nodes: np.ndarray
    weights: np.ndarray
    quad_forms: np.ndarray
    dim: int
    num_steps: int
    num_vectors: int
    seed: int | str | None
    distribution: str
    steps_taken: np.ndarray
    num_matvecs: int
    num_passes: int
    null_dim: int = 0
    top: TopEigenvalues | None = None
    method: str = "slq"

    @property
    def trace(self) -> float:
        return float(np.mean(self.quad_forms))

    @property
    def trace_stderr(self) -> float:
        q = self.quad_forms
        return float(np.std(q, ddof=1) / math.sqrt(q.size)) if q.size > 1 else float("nan")

    @property
    def lambda_max(self) -> float:
        return float(np.nanmax(self.nodes))

    @property
    def lambda_min(self) -> float:
        return float(np.nanmin(self.nodes))

    def flat(self) -> tuple[np.ndarray, np.ndarray]:
        """All nodes and weights as one discrete distribution (weights sum to 1)."""
        mask = self.weights > 0
        return self.nodes[mask], self.weights[mask] / self.nodes.shape[0]

    def cdf(self, x: np.ndarray | float) -> np.ndarray:
        """Quadrature estimate of the ESD's CDF, F(x) = sum of weights of nodes <= x."""
        nodes, w = self.flat()
        return discrete_cdf(nodes, w, x)

    def params(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "num_steps": self.num_steps,
            "num_vectors": self.num_vectors,
            "seed": self.seed,
            "distribution": self.distribution,
            "num_matvecs": self.num_matvecs,
            "num_passes": self.num_passes,
            "null_dim": self.null_dim,
        }

    @property
    def settings(self) -> dict[str, Any]:
        """What produced the quadrature (same as :meth:`params`)."""
        return self.params()

    def summary(self) -> dict[str, Any]:
        """Headline numbers: trace estimate ± standard error, extreme nodes, settings."""
        return jsonable({
            "trace": self.trace,
            "trace_stderr": self.trace_stderr,
            "lambda_max": self.lambda_max,
            "lambda_min": self.lambda_min,
            "dim": self.dim,
            **self.settings,
        })

    def to_dict(self) -> dict[str, Any]:
        d = jsonable(asdict(self))
        d.update(trace=self.trace, trace_stderr=jsonable(self.trace_stderr))
        d["lambda_max"] = self.lambda_max
        d["settings"] = jsonable(self.settings)
        return d

    def to_frame(self) -> Any:
        """The discrete measure, one row per node: ``node``, ``weight`` (summing to 1)."""
        import pandas as pd

        nodes, w = self.flat()
        return pd.DataFrame({"node": nodes, "weight": w})


def slq(
    A: Any,
    num_steps: int = 80,
    num_vectors: int = 10,
    *,
    seed: SeedLike = 0,
    distribution: str = "rademacher",
    block_size: int | None = None,
    project: Callable[[np.ndarray], np.ndarray] | None = None,
    null_dim: int = 0,
    top_k: int = 0,
    progress: bool = False,
) -> LanczosQuadrature:
    """Stochastic Lanczos quadrature with ``num_vectors`` random start vectors.

    Runs ``num_steps`` Lanczos steps per vector, ``block_size`` vectors at a time (default:
    all at once, so the whole estimate costs ``num_steps`` passes over the data).
    Cost: num_steps * num_vectors products; memory: block_size * num_steps * dim floats.

    Known null space: if ``project`` is the orthogonal projector P onto the complement of a
    ``null_dim``-dimensional subspace that A annihilates (A = P A P), start vectors are
    projected, the quadrature estimates the spectrum on range(P) and the exact atom
    null_dim/dim at 0 is added as an extra node (last column). Trace samples use P v, still
    unbiased since E[P v v^T P] = P and tr(P A P) = tr A.

    ``top_k > 0`` also returns the k largest Ritz values of A on the union of the Krylov
    spaces, which is the block Krylov space K_m(A, [v_1..v_s]) (block Lanczos for free, no
    extra passes; stores A Q, doubling memory).
    """
    op = as_operator(A)
    num_steps = positive_int("num_steps", num_steps)
    num_vectors = positive_int("num_vectors", num_vectors)
    block = positive_int("block_size", block_size or num_vectors)
    dim = op.shape[0]
    if not (0 <= int(null_dim) < dim) or (null_dim and project is None):
        raise ValueError(f"null_dim must be in [0, {dim}) and needs project, got {null_dim}.")
    V = random_vectors(dim, num_vectors, seed=seed, distribution=distribution)
    if project is not None:
        V = np.asarray(project(V), dtype=np.float64)
    m = min(num_steps, dim - int(null_dim))
    mv0 = op.num_matvecs
    runs = _quadrature_runs(op, V, m, block, 1 if null_dim else 0, top_k > 0, progress)
    top = None
    if top_k > 0:
        top = _block_krylov_top(runs, int(top_k), m, num_vectors, seed, op.num_matvecs - mv0)
    if null_dim:
        _add_null_atom(runs, int(null_dim) / dim)
    return LanczosQuadrature(
        nodes=runs.nodes,
        weights=runs.weights,
        quad_forms=runs.quad,
        dim=dim,
        num_steps=num_steps,
        num_vectors=num_vectors,
        seed=seed_repr(seed),
        distribution=distribution,
        steps_taken=runs.steps,
        num_matvecs=op.num_matvecs - mv0,
        num_passes=runs.passes,
        null_dim=int(null_dim),
        top=top,
    )


@dataclass
class _Runs:
    """What the Lanczos runs of :func:`slq` gave: per start vector i, its Gauss nodes and
    weights (row i), quadratic form v_i^T A v_i and steps taken; with ``store`` the Krylov
    bases and their images, for Rayleigh-Ritz on their union."""

    nodes: np.ndarray
    weights: np.ndarray
    quad: np.ndarray
    steps: np.ndarray
    passes: int = 0
    rows_x: list[np.ndarray] = field(default_factory=list)
    rows_ax: list[np.ndarray] = field(default_factory=list)


def _quadrature_runs(
    op: Any, V: np.ndarray, m: int, block: int, extra: int, store: bool, progress: bool
) -> _Runs:
    """Lanczos on the columns of ``V``, ``block`` at a time, ``m`` steps each; node/weight
    rows have ``extra`` trailing slots (NaN node, weight 0) for atoms added afterwards."""
    num_vectors = V.shape[1]
    runs = _Runs(
        nodes=np.full((num_vectors, m + extra), np.nan),
        weights=np.zeros((num_vectors, m + extra)),
        quad=np.empty(num_vectors),
        steps=np.zeros(num_vectors, dtype=int),
    )
    for b0 in range(0, num_vectors, block):
        run = lanczos(op, V[:, b0 : b0 + block], m, store_images=store, progress=progress)
        runs.passes += run.num_passes
        if store:
            assert run.basis is not None and run.images is not None
            for i in range(run.steps.size):
                runs.rows_x.append(run.basis[i, : run.steps[i]])
                runs.rows_ax.append(run.images[i, : run.steps[i]])
        for i in range(run.steps.size):
            a, bt = run.tridiagonal(i)
            theta, tau = ritz(a, bt)
            runs.nodes[b0 + i, : theta.size] = theta
            runs.weights[b0 + i, : theta.size] = tau
            runs.quad[b0 + i] = run.start_norms[i] ** 2 * a[0]
            runs.steps[b0 + i] = run.steps[i]
    return runs


def _block_krylov_top(
    runs: _Runs, k: int, m: int, num_vectors: int, seed: SeedLike, num_matvecs: int
) -> TopEigenvalues:
    """The k largest Ritz values of A on the union of the runs' Krylov spaces (the block
    Krylov space K_m(A, [v_1..v_s])); the stored bases are released."""
    X = np.concatenate(runs.rows_x, axis=0)
    AX = np.concatenate(runs.rows_ax, axis=0)
    runs.rows_x, runs.rows_ax = [], []
    theta, resid = rayleigh_ritz(X, AX, k)
    return TopEigenvalues(
        values=theta,
        residuals=resid,
        method="slq-block-krylov",
        k=k,
        num_steps=m,
        block_size=num_vectors,
        seed=seed_repr(seed),
        num_matvecs=num_matvecs,  # shared with the quadrature, not extra
        num_passes=runs.passes,
    )


def _add_null_atom(runs: _Runs, frac: float) -> None:
    """Scale the quadrature on range(P) by 1 - frac and put the exact atom frac at 0 in the
    last column (the null space's share null_dim/dim)."""
    runs.weights *= 1.0 - frac
    runs.nodes[:, -1] = 0.0
    runs.weights[:, -1] = frac


@dataclass(frozen=True)
class SpectralDensity:
    """A spectral density on a grid, from quadrature nodes/weights or exact eigenvalues.

    ``density`` = sum_j w_j N(grid; θ_j, sigma^2) (``log_scale=False``) or the same in
    log10(λ) over the nonzero nodes (``log_scale=True``, then density integrates to
    1 - zero_mass over log10 λ). ``zero_mass`` is the weight of nodes <= zero_tol * λ_max.
    """

    grid: np.ndarray
    density: np.ndarray
    nodes: np.ndarray
    weights: np.ndarray
    sigma: float
    log_scale: bool
    zero_tol: float
    zero_mass: float
    lambda_max: float
    method: str
    params: dict[str, Any] = field(default_factory=dict)

    def cdf(self, x: np.ndarray | float) -> np.ndarray:
        """Step CDF of the underlying discrete measure (nodes, weights)."""
        return discrete_cdf(self.nodes, self.weights, x)

    @property
    def settings(self) -> dict[str, Any]:
        """What produced the density: kernel width, axis, zero threshold, and ``params``."""
        return {"method": self.method, "sigma": self.sigma, "log_scale": self.log_scale,
                "zero_tol": self.zero_tol, **self.params}

    def summary(self) -> dict[str, Any]:
        """Headline numbers: lambda_max, mass at zero, grid size and the settings."""
        return jsonable({"lambda_max": self.lambda_max, "zero_mass": self.zero_mass,
                         "num_points": int(self.grid.size), **self.settings})

    def to_dict(self) -> dict[str, Any]:
        return jsonable(asdict(self))

    def to_frame(self) -> Any:
        import pandas as pd

        return pd.DataFrame({"x": self.grid, "density": self.density})


def broaden(
    nodes: np.ndarray, weights: np.ndarray, grid: np.ndarray, sigma: float, chunk: int = 4096
) -> np.ndarray:
    """Weighted nodes broadened into a density on ``grid`` by a Gaussian of width ``sigma``."""
    out = np.zeros_like(grid)
    norm = 1.0 / (sigma * math.sqrt(2 * math.pi))
    for s in range(0, nodes.size, chunk):
        z = (grid[:, None] - nodes[None, s : s + chunk]) / sigma
        out += np.exp(-0.5 * z * z) @ weights[s : s + chunk]
    return out * norm


def spectral_density(
    nodes: np.ndarray,
    weights: np.ndarray | None = None,
    *,
    grid: np.ndarray | None = None,
    density_options: DensityOptions | None = None,
    method: str = "slq",
    params: dict[str, Any] | None = None,
    **fields: Any,
) -> SpectralDensity:
    """Gaussian-broadened density of a discrete measure (nodes, weights summing to 1).

    ``weights=None`` means equal weights (exact eigenvalues). ``density_options``
    (:class:`~jacspec.spectra.options.DensityOptions`) or its fields as keywords
    (``num_points``, ``sigma``, ``rel_sigma``, ``log_scale``, ``zero_tol``): ``sigma`` is
    the kernel width in the units of the grid (λ, or log10 λ when ``log_scale``); by default
    ``rel_sigma * (grid span)``. Nodes <= ``zero_tol * λ_max`` count as exact zeros.
    """
    opts = resolve_density_options(density_options, **fields)
    nodes, w = _finite_measure(nodes, weights)
    lam_max = float(np.max(nodes))
    thresh = opts.zero_tol * max(abs(lam_max), np.finfo(float).tiny)
    is_zero = nodes <= thresh
    zero_mass = float(w[is_zero].sum())
    if opts.log_scale:
        x, wx = np.log10(nodes[~is_zero]), w[~is_zero]
        if x.size == 0:
            raise ValueError("log_scale=True needs nodes above zero_tol * lambda_max.")
    else:
        x, wx = np.clip(nodes, 0.0, None) if np.all(nodes > -thresh) else nodes, w
    grid = _density_grid(x, opts) if grid is None else np.asarray(grid, dtype=np.float64)
    sigma = opts.sigma
    if sigma is None:
        span = float(grid.max() - grid.min()) or 1.0
        sigma = opts.rel_sigma * span
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}.")
    return SpectralDensity(
        grid=grid,
        density=broaden(x, wx, grid, float(sigma)),
        nodes=nodes,
        weights=w,
        sigma=float(sigma),
        log_scale=opts.log_scale,
        zero_tol=opts.zero_tol,
        zero_mass=zero_mass,
        lambda_max=lam_max,
        method=method,
        params=dict(params or {}),
    )


def _finite_measure(
    nodes: np.ndarray, weights: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights (None: equal) as float64, without non-finite nodes or zero weights."""
    nodes = np.asarray(nodes, dtype=np.float64).ravel()
    w = (
        np.full(nodes.size, 1.0 / max(nodes.size, 1))
        if weights is None
        else np.asarray(weights, dtype=np.float64).ravel()
    )
    if nodes.size == 0 or w.shape != nodes.shape:
        raise ValueError("nodes must be nonempty and weights must match nodes in shape.")
    keep = np.isfinite(nodes) & (w > 0)
    return nodes[keep], w[keep]


def _density_grid(x: np.ndarray, opts: DensityOptions) -> np.ndarray:
    """``num_points`` evenly spaced points over the nodes ``x``, padded by 3 kernel widths."""
    lo, hi = float(x.min()), float(x.max())
    span = hi - lo if hi > lo else max(abs(hi), 1.0)
    pad = 3 * (opts.sigma if opts.sigma is not None else opts.rel_sigma * span)
    return np.linspace(lo - pad, hi + pad, opts.num_points)


def slq_with(A: Any, options: SLQOptions, *, project: Callable[[np.ndarray], np.ndarray]
             | None = None, null_dim: int = 0, top_k: int = 0,
             progress: bool = False) -> LanczosQuadrature:
    """:func:`slq` with the run fields of a resolved :class:`SLQOptions` (``num_steps``,
    ``num_vectors``, ``seed``, ``distribution``, ``block_size``) passed whole; ``top_k``
    Ritz values of the same Krylov space (0: none)."""
    return slq(A, options.num_steps, options.num_vectors, seed=options.seed,
               distribution=options.distribution, block_size=options.block_size,
               project=project, null_dim=null_dim, top_k=top_k, progress=progress)


def slq_density(
    A: Any,
    num_steps: int | None = None,
    num_vectors: int | None = None,
    *,
    slq_options: SLQOptions | None = None,
    density_options: DensityOptions | None = None,
    project: Callable[[np.ndarray], np.ndarray] | None = None,
    null_dim: int = 0,
    grid: np.ndarray | None = None,
    progress: bool = False,
    **fields: Any,
) -> SpectralDensity:
    """SLQ (:func:`slq`) followed by Gaussian broadening (:func:`spectral_density`).

    ``slq_options`` (:class:`~jacspec.spectra.options.SLQOptions`: ``num_steps``,
    ``num_vectors``, ``seed``, ``distribution``, ``block_size``; its top-k fields do not
    apply here) and ``density_options``
    (:class:`~jacspec.spectra.options.DensityOptions`), or their fields as keywords.
    """
    slq_fields, density_fields, rest = split_spectrum_fields(fields)
    if rest:
        raise TypeError(f"slq_density() got an unexpected keyword {sorted(rest)[0]!r}")
    given = {"num_steps": num_steps, "num_vectors": num_vectors}
    so = resolve_slq_options(
        slq_options, **{k: v for k, v in given.items() if v is not None}, **slq_fields
    )
    q = slq_with(A, so, project=project, null_dim=null_dim, progress=progress)
    nodes, w = q.flat()
    params = q.params() | {"trace": q.trace, "trace_stderr": q.trace_stderr}
    return spectral_density(
        nodes, w, grid=grid, density_options=density_options, method="slq", params=params,
        **density_fields,
    )


def cdf_distance(
    values_a: np.ndarray,
    values_b: np.ndarray,
    weights_a: np.ndarray | None = None,
    weights_b: np.ndarray | None = None,
    *,
    zero_tol: float = 0.0,
) -> float:
    """Kolmogorov-Smirnov distance sup_x |F_a(x) - F_b(x)| between two weighted discrete laws.

    Weights default to uniform and are normalized to sum 1. With ``zero_tol > 0`` values
    <= zero_tol * max(values_a) in either law are set to exactly 0 first (eigenvalues of a
    rank-deficient matrix are zeros up to rounding; this merges them into one atom at 0).
    """
    a = np.asarray(values_a, dtype=float).ravel()
    b = np.asarray(values_b, dtype=float).ravel()
    wa = np.ones_like(a) if weights_a is None else np.asarray(weights_a, dtype=float).ravel()
    wb = np.ones_like(b) if weights_b is None else np.asarray(weights_b, dtype=float).ravel()
    if a.shape != wa.shape or b.shape != wb.shape or a.size == 0 or b.size == 0:
        raise ValueError("values must be nonempty and weights must match values in shape.")
    ka, kb = np.isfinite(a) & (wa > 0), np.isfinite(b) & (wb > 0)
    a, wa, b, wb = a[ka], wa[ka] / wa[ka].sum(), b[kb], wb[kb] / wb[kb].sum()
    if zero_tol > 0:
        t = zero_tol * float(np.max(np.abs(a)))
        a = np.where(a <= t, 0.0, a)
        b = np.where(b <= t, 0.0, b)
    pts = np.union1d(a, b)

    def F(v: np.ndarray, w: np.ndarray) -> np.ndarray:
        o = np.argsort(v)
        cum = np.concatenate([[0.0], np.cumsum(w[o])])
        return cum[np.searchsorted(v[o], pts, side="right")]

    return float(np.max(np.abs(F(a, wa) - F(b, wb))))

