"""Spectrum estimates from matrix-vector products: Lanczos, SLQ, top-k, trace.

All functions take a symmetric operator A (dim x dim): a
:class:`jacspec.spectra.operators.LinearOperator`
(e.g. a :class:`~jacspec.spectra.operators.GramOperator`), a square array / tensor, or a scipy
LinearOperator. They apply A to blocks of vectors, so one pass over the data behind A serves
a whole block. Numbers are float64 numpy; results are frozen dataclasses recording the method
and its settings (``to_dict()``).

- :func:`lanczos`: s Lanczos recurrences in lockstep with full reorthogonalization, giving
  tridiagonals T_i (m x m) with A Q_i = Q_i T_i + beta_m q_{m+1} e_m^T.
- :func:`slq`: stochastic Lanczos quadrature. For a unit start vector v and T = U diag(θ) U^T,
  v^T f(A) v ≈ sum_j τ_j f(θ_j), τ_j = U_{1j}^2; averaging over random v estimates
  tr f(A) / dim, i.e. the ESD ≈ (1/s) sum_i sum_j τ_ij δ(λ - θ_ij).
- :func:`spectral_density`: Gaussian broadening of quadrature nodes onto a grid.
- :func:`top_eigenvalues`: block Lanczos or randomized subspace iteration + Rayleigh-Ritz.
- :func:`hutchinson_trace`, :func:`hutchpp_trace`: tr A ≈ mean v^T A v (Girard-Hutchinson);
  Hutch++ (Meyer et al. 2021) deflates a sketched top subspace first.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import scipy.linalg

from jacspec.spectra.operators import LinearOperator, as_operator

logger = logging.getLogger(__name__)

__all__ = [
    "LanczosQuadrature",
    "SpectralDensity",
    "TopEigenvalues",
    "TraceEstimate",
    "cdf_distance",
    "hutchinson_trace",
    "hutchpp_trace",
    "lanczos",
    "random_vectors",
    "slq",
    "slq_density",
    "spectral_density",
    "top_eigenvalues",
]

_DISTRIBUTIONS = ("rademacher", "normal")
SeedLike = int | np.random.Generator | None


def _rng(seed: SeedLike) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or (isinstance(seed, (int, np.integer)) and not isinstance(seed, bool)):
        return np.random.default_rng(seed)
    raise TypeError(f"seed must be an int, a numpy Generator or None, got {type(seed).__name__}.")


def _seed_repr(seed: SeedLike) -> int | str | None:
    return seed if isinstance(seed, (int, type(None))) else "Generator"


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}.")
    return int(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()] if value.ndim else _jsonable(value.item())
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def discrete_cdf(nodes: np.ndarray, weights: np.ndarray, x: np.ndarray | float) -> np.ndarray:
    """Step CDF ``F(x) = sum_{nodes_i <= x} weights_i`` of a discrete measure."""
    order = np.argsort(nodes)
    cum = np.concatenate([[0.0], np.cumsum(weights[order])])
    return cum[np.searchsorted(nodes[order], np.asarray(x, dtype=float), side="right")]


def random_vectors(
    dim: int, num: int, *, seed: SeedLike = 0, distribution: str = "rademacher"
) -> np.ndarray:
    """Random probe vectors (dim, num) in float64: Rademacher ±1 or standard normal entries."""
    dim, num = _positive_int(dim, "dim"), _positive_int(num, "num")
    rng = _rng(seed)
    if distribution == "rademacher":
        return rng.choice(np.array([-1.0, 1.0]), size=(dim, num))
    if distribution == "normal":
        return rng.standard_normal((dim, num))
    raise ValueError(f"distribution must be one of {_DISTRIBUTIONS}, got {distribution!r}.")


def _apply(op: LinearOperator, V: np.ndarray) -> np.ndarray:
    return np.asarray(op.matmat(V), dtype=np.float64)


def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="pass")


# --------------------------------------------------------------------------- Lanczos


@dataclass(frozen=True)
class LanczosRun:
    """Tridiagonals of s lockstep Lanczos runs: ``alphas[i][:m_i]``, ``betas[i][:m_i-1]``.

    With ``store_images=True`` also the bases Q_i (``basis[i, :m_i]``, rows are Lanczos
    vectors) and their images A Q_i (``images[i, :m_i]``), for Rayleigh-Ritz afterwards.
    """

    alphas: np.ndarray  # (s, m), NaN after the run's last step
    betas: np.ndarray  # (s, m - 1), NaN after the run's last step
    steps: np.ndarray  # (s,) steps actually taken (a run stops early on an invariant subspace)
    start_norms: np.ndarray  # (s,) norms of the start vectors
    num_passes: int
    basis: np.ndarray | None = None  # (s, m, dim)
    images: np.ndarray | None = None  # (s, m, dim)

    def tridiagonal(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        m = int(self.steps[i])
        return self.alphas[i, :m].copy(), self.betas[i, : m - 1].copy()


def lanczos(
    A: Any,
    start: np.ndarray,
    num_steps: int,
    *,
    tol: float = 1e-10,
    store_images: bool = False,
    progress: bool = False,
) -> LanczosRun:
    """Run s Lanczos recurrences (one per column of ``start``, shape (dim, s)) in lockstep.

    Every step applies A once to the block of current vectors (one pass for all s) and
    reorthogonalizes each new vector against its own full basis, twice. A run stops when
    beta_j <= tol * max|T| (its Krylov space is invariant); the others continue.
    Memory: s * num_steps * dim float64 (twice with ``store_images``).
    """
    op = as_operator(A)
    num_steps = _positive_int(num_steps, "num_steps")
    V0 = np.asarray(start, dtype=np.float64)
    if V0.ndim == 1:
        V0 = V0[:, None]
    dim = op.shape[0]
    if V0.ndim != 2 or V0.shape[0] != dim:
        raise ValueError(f"start must have shape ({dim}, s), got {np.shape(start)}.")
    s = V0.shape[1]
    m = min(num_steps, dim)
    norms = np.linalg.norm(V0, axis=0)
    if np.any(norms == 0) or not np.all(np.isfinite(norms)):
        raise ValueError("start vectors must be finite and nonzero.")
    basis = np.zeros((s, m, dim))
    images = np.zeros((s, m, dim)) if store_images else None
    alphas = np.full((s, m), np.nan)
    betas = np.full((s, max(m - 1, 0)), np.nan)
    steps = np.zeros(s, dtype=int)
    q = V0 / norms
    q_prev = np.zeros_like(q)
    beta_prev = np.zeros(s)
    active = np.arange(s)
    scale = np.zeros(s)
    bar = _progress(m, "lanczos", progress)
    passes = 0
    for j in range(m):
        full = active.size == s
        basis[active, j, :] = q.T
        w = _apply(op, q)
        passes += 1
        if images is not None:
            images[active, j, :] = w.T
        alpha = np.einsum("ds,ds->s", q, w)
        w -= q * alpha + q_prev * beta_prev
        Qa = basis[:, : j + 1, :] if full else basis[active, : j + 1, :]  # (a, j+1, dim)
        wt = np.ascontiguousarray(w.T)[:, :, None]  # (a, dim, 1)
        for _ in range(2):
            coef = np.matmul(Qa, wt)  # (a, j+1, 1)
            wt -= np.matmul(Qa.transpose(0, 2, 1), coef)
        w = wt[:, :, 0].T
        beta = np.linalg.norm(w, axis=0)
        alphas[active, j] = alpha
        steps[active] = j + 1
        scale[active] = np.maximum(scale[active], np.abs(alpha) + beta + beta_prev)
        if bar is not None:
            bar.update(1)
        if j == m - 1:
            break
        keep = beta > tol * np.maximum(scale[active], np.finfo(float).tiny)
        betas[active[keep], j] = beta[keep]
        if not np.any(keep):
            break
        q_prev = q[:, keep]
        q = w[:, keep] / beta[keep]
        beta_prev = beta[keep]
        active = active[keep]
    if bar is not None:
        bar.close()
    return LanczosRun(alphas, betas, steps, norms, passes, basis if store_images else None,
                      images)


def _rayleigh_ritz(
    X: np.ndarray, AX: np.ndarray, k: int, rtol: float = 1e-10
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k Ritz values of A on span(rows of X) (not necessarily orthonormal), given AX.

    Whitens the Gram G = X X^T (dropping eigenvalues < rtol * max), solves the projected
    eigenproblem and returns (values descending, residual norms ||A y - θ y||, ||y|| = 1).
    """
    G = X @ X.T
    g, U = np.linalg.eigh(0.5 * (G + G.T))
    keep = g > rtol * g.max()
    C = U[:, keep] / np.sqrt(g[keep])  # Y = C^T X has orthonormal rows
    H = C.T @ (X @ AX.T) @ C
    theta, Z = np.linalg.eigh(0.5 * (H + H.T))
    order = np.argsort(theta)[::-1][:k]
    theta, Z = theta[order], Z[:, order]
    coef = C @ Z  # (p, k): y = X^T coef
    Y = X.T @ coef
    AY = AX.T @ coef
    resid = np.linalg.norm(AY - Y * theta, axis=0)
    return theta, resid


def _ritz(alpha: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nodes θ (eigenvalues of T) and Gauss weights τ = (first eigenvector components)^2."""
    if alpha.size == 1:
        return alpha.copy(), np.ones(1)
    theta, U = scipy.linalg.eigh_tridiagonal(alpha, beta)
    return theta, U[0, :] ** 2


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

    def to_dict(self) -> dict[str, Any]:
        d = _jsonable(asdict(self))
        d.update(trace=self.trace, trace_stderr=_jsonable(self.trace_stderr))
        d["lambda_max"] = self.lambda_max
        return d


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
    num_steps = _positive_int(num_steps, "num_steps")
    num_vectors = _positive_int(num_vectors, "num_vectors")
    block = _positive_int(block_size or num_vectors, "block_size")
    dim = op.shape[0]
    if not (0 <= int(null_dim) < dim) or (null_dim and project is None):
        raise ValueError(f"null_dim must be in [0, {dim}) and needs project, got {null_dim}.")
    V = random_vectors(dim, num_vectors, seed=seed, distribution=distribution)
    if project is not None:
        V = np.asarray(project(V), dtype=np.float64)
    m = min(num_steps, dim - int(null_dim))
    extra = 1 if null_dim else 0
    nodes = np.full((num_vectors, m + extra), np.nan)
    weights = np.zeros((num_vectors, m + extra))
    quad = np.empty(num_vectors)
    steps = np.zeros(num_vectors, dtype=int)
    mv0 = op.num_matvecs
    passes = 0
    rows_x: list[np.ndarray] = []
    rows_ax: list[np.ndarray] = []
    for b0 in range(0, num_vectors, block):
        run = lanczos(op, V[:, b0 : b0 + block], m, store_images=top_k > 0, progress=progress)
        passes += run.num_passes
        if top_k > 0:
            assert run.basis is not None and run.images is not None
            for i in range(run.steps.size):
                rows_x.append(run.basis[i, : run.steps[i]])
                rows_ax.append(run.images[i, : run.steps[i]])
        for i in range(run.steps.size):
            a, bt = run.tridiagonal(i)
            theta, tau = _ritz(a, bt)
            nodes[b0 + i, : theta.size] = theta
            weights[b0 + i, : theta.size] = tau
            quad[b0 + i] = run.start_norms[i] ** 2 * a[0]
            steps[b0 + i] = run.steps[i]
    top = None
    if top_k > 0:
        X = np.concatenate(rows_x, axis=0)
        AX = np.concatenate(rows_ax, axis=0)
        theta, resid = _rayleigh_ritz(X, AX, int(top_k))
        del X, AX, rows_x, rows_ax
        top = TopEigenvalues(
            values=theta,
            residuals=resid,
            method="slq-block-krylov",
            k=int(top_k),
            num_steps=m,
            block_size=num_vectors,
            seed=_seed_repr(seed),
            num_matvecs=op.num_matvecs - mv0,  # shared with the quadrature, not extra
            num_passes=passes,
        )
    if null_dim:
        frac = int(null_dim) / dim
        weights *= 1.0 - frac
        nodes[:, -1] = 0.0
        weights[:, -1] = frac
    return LanczosQuadrature(
        nodes=nodes,
        weights=weights,
        quad_forms=quad,
        dim=dim,
        num_steps=num_steps,
        num_vectors=num_vectors,
        seed=_seed_repr(seed),
        distribution=distribution,
        steps_taken=steps,
        num_matvecs=op.num_matvecs - mv0,
        num_passes=passes,
        null_dim=int(null_dim),
        top=top,
    )


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

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))

    def to_frame(self) -> Any:
        import pandas as pd

        return pd.DataFrame({"x": self.grid, "density": self.density})


def _broaden(
    nodes: np.ndarray, weights: np.ndarray, grid: np.ndarray, sigma: float, chunk: int = 4096
) -> np.ndarray:
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
    num_points: int = 512,
    sigma: float | None = None,
    rel_sigma: float = 0.01,
    log_scale: bool = False,
    zero_tol: float = 1e-8,
    method: str = "slq",
    params: dict[str, Any] | None = None,
) -> SpectralDensity:
    """Gaussian-broadened density of a discrete measure (nodes, weights summing to 1).

    ``weights=None`` means equal weights (exact eigenvalues). ``sigma`` is the kernel width
    in the units of the grid (λ, or log10 λ when ``log_scale``); by default
    ``rel_sigma * (grid span)``. Nodes <= ``zero_tol * λ_max`` count as exact zeros.
    """
    nodes = np.asarray(nodes, dtype=np.float64).ravel()
    w = (
        np.full(nodes.size, 1.0 / max(nodes.size, 1))
        if weights is None
        else np.asarray(weights, dtype=np.float64).ravel()
    )
    if nodes.size == 0 or w.shape != nodes.shape:
        raise ValueError("nodes must be nonempty and weights must match nodes in shape.")
    keep = np.isfinite(nodes) & (w > 0)
    nodes, w = nodes[keep], w[keep]
    lam_max = float(np.max(nodes))
    thresh = zero_tol * max(abs(lam_max), np.finfo(float).tiny)
    is_zero = nodes <= thresh
    zero_mass = float(w[is_zero].sum())
    if log_scale:
        x, wx = np.log10(nodes[~is_zero]), w[~is_zero]
        if x.size == 0:
            raise ValueError("log_scale=True needs nodes above zero_tol * lambda_max.")
    else:
        x, wx = np.clip(nodes, 0.0, None) if np.all(nodes > -thresh) else nodes, w
    if grid is None:
        lo, hi = float(x.min()), float(x.max())
        span = hi - lo if hi > lo else max(abs(hi), 1.0)
        pad = 3 * (sigma if sigma is not None else rel_sigma * span)
        grid = np.linspace(lo - pad, hi + pad, _positive_int(num_points, "num_points"))
    grid = np.asarray(grid, dtype=np.float64)
    if sigma is None:
        span = float(grid.max() - grid.min()) or 1.0
        sigma = rel_sigma * span
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}.")
    dens = _broaden(x, wx, grid, float(sigma))
    return SpectralDensity(
        grid=grid,
        density=dens,
        nodes=nodes,
        weights=w,
        sigma=float(sigma),
        log_scale=log_scale,
        zero_tol=zero_tol,
        zero_mass=zero_mass,
        lambda_max=lam_max,
        method=method,
        params=dict(params or {}),
    )


def slq_density(
    A: Any,
    num_steps: int = 80,
    num_vectors: int = 10,
    *,
    seed: SeedLike = 0,
    distribution: str = "rademacher",
    block_size: int | None = None,
    project: Callable[[np.ndarray], np.ndarray] | None = None,
    null_dim: int = 0,
    grid: np.ndarray | None = None,
    num_points: int = 512,
    sigma: float | None = None,
    rel_sigma: float = 0.01,
    log_scale: bool = False,
    zero_tol: float = 1e-8,
    progress: bool = False,
) -> SpectralDensity:
    """SLQ (:func:`slq`) followed by Gaussian broadening (:func:`spectral_density`)."""
    q = slq(
        A,
        num_steps,
        num_vectors,
        seed=seed,
        distribution=distribution,
        block_size=block_size,
        project=project,
        null_dim=null_dim,
        progress=progress,
    )
    nodes, w = q.flat()
    params = q.params() | {"trace": q.trace, "trace_stderr": q.trace_stderr}
    return spectral_density(
        nodes,
        w,
        grid=grid,
        num_points=num_points,
        sigma=sigma,
        rel_sigma=rel_sigma,
        log_scale=log_scale,
        zero_tol=zero_tol,
        method="slq",
        params=params,
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


# --------------------------------------------------------------------------- top-k


@dataclass(frozen=True)
class TopEigenvalues:
    """Largest eigenvalues (descending) with residual norms ||A y - θ y|| of unit Ritz vectors."""

    values: np.ndarray
    residuals: np.ndarray
    method: str
    k: int
    num_steps: int
    block_size: int
    seed: int | str | None
    num_matvecs: int
    num_passes: int

    @property
    def lambda_max(self) -> float:
        return float(self.values[0])

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))

    def to_frame(self) -> Any:
        import pandas as pd

        return pd.DataFrame({"eigenvalue": self.values, "residual": self.residuals})


def _orth(W: np.ndarray, rtol: float = 1e-10) -> np.ndarray:
    """Orthonormal basis of range(W), dropping directions with tiny singular values."""
    if W.shape[1] == 0:
        return W
    U, sv, _ = np.linalg.svd(W, full_matrices=False)
    if sv.size == 0 or sv[0] == 0:
        return W[:, :0]
    return U[:, sv > rtol * sv[0]]


def top_eigenvalues(
    A: Any,
    k: int = 10,
    *,
    num_steps: int = 20,
    block_size: int | None = None,
    seed: SeedLike = 0,
    method: str = "lanczos",
    progress: bool = False,
) -> TopEigenvalues:
    """The k largest eigenvalues of a symmetric A by Rayleigh-Ritz on a block Krylov space.

    ``method="lanczos"``: block Lanczos with full reorthogonalization, basis
    [Q_0, ..., Q_{m-1}] of K_m(A, Ω), ``num_steps`` = m passes of ``block_size`` vectors.
    ``method="subspace"``: randomized subspace iteration Q <- orth(A Q) (Halko et al. 2011),
    ``num_steps`` passes. Both finish with eig(Q^T A Q) and report residuals.
    """
    op = as_operator(A)
    k = _positive_int(k, "k")
    num_steps = _positive_int(num_steps, "num_steps")
    dim = op.shape[0]
    if k > dim:
        raise ValueError(f"k must be at most the dimension {dim}, got {k}.")
    b = _positive_int(block_size or min(dim, k + 5), "block_size")
    if method not in ("lanczos", "subspace"):
        raise ValueError(f"method must be 'lanczos' or 'subspace', got {method!r}.")
    mv0 = op.num_matvecs
    Q = _orth(random_vectors(dim, min(b, dim), seed=seed, distribution="normal"))
    bar = _progress(num_steps, f"top-{k} ({method})", progress)
    passes = 0
    if method == "lanczos":
        basis: list[np.ndarray] = []
        images: list[np.ndarray] = []
        total = 0
        for _ in range(num_steps):
            W = _apply(op, Q)
            passes += 1
            basis.append(Q)
            images.append(W)
            total += Q.shape[1]
            if bar is not None:
                bar.update(1)
            if total >= dim:
                break
            B = np.concatenate(basis, axis=1)
            R = W.copy()
            for _ in range(2):
                R -= B @ (B.T @ R)
            Q = _orth(R, rtol=1e-8)
            if Q.shape[1] == 0:
                break
            for _ in range(2):  # keep the new block orthogonal to the basis after truncation
                Q -= B @ (B.T @ Q)
            Q = _orth(Q)
        B = np.concatenate(basis, axis=1)
        AB = np.concatenate(images, axis=1)
    else:
        W = Q
        for it in range(num_steps):
            W = _apply(op, Q)
            passes += 1
            if bar is not None:
                bar.update(1)
            if it < num_steps - 1:
                Q = _orth(W)
        # Rayleigh-Ritz on the last iterate: we hold Q and W = A Q
        B, AB = Q, W
    if bar is not None:
        bar.close()
    H = B.T @ AB
    H = 0.5 * (H + H.T)
    theta, Z = np.linalg.eigh(H)
    order = np.argsort(theta)[::-1][:k]
    theta, Z = theta[order], Z[:, order]
    resid = np.linalg.norm(AB @ Z - (B @ Z) * theta, axis=0)
    if theta.size < k:
        logger.warning("top_eigenvalues: Krylov space has %d directions (< k=%d)", theta.size, k)
    return TopEigenvalues(
        values=theta,
        residuals=resid,
        method=method,
        k=k,
        num_steps=num_steps,
        block_size=b,
        seed=_seed_repr(seed),
        num_matvecs=op.num_matvecs - mv0,
        num_passes=passes,
    )


# --------------------------------------------------------------------------- trace


@dataclass(frozen=True)
class TraceEstimate:
    """A stochastic trace estimate ``value`` ± ``stderr`` (standard error of the mean)."""

    value: float
    stderr: float
    method: str
    num_matvecs: int
    seed: int | str | None
    distribution: str

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))


def hutchinson_trace(
    A: Any,
    num_matvecs: int = 100,
    *,
    seed: SeedLike = 0,
    distribution: str = "rademacher",
    block_size: int | None = None,
) -> TraceEstimate:
    """Girard-Hutchinson: tr A ≈ (1/N) sum_i v_i^T A v_i with E[v v^T] = I (N = num_matvecs)."""
    op = as_operator(A)
    num = _positive_int(num_matvecs, "num_matvecs")
    block = _positive_int(block_size or num, "block_size")
    V = random_vectors(op.shape[0], num, seed=seed, distribution=distribution)
    samples = np.empty(num)
    for s in range(0, num, block):
        Vb = V[:, s : s + block]
        samples[s : s + Vb.shape[1]] = np.einsum("ds,ds->s", Vb, _apply(op, Vb))
    stderr = float(np.std(samples, ddof=1) / math.sqrt(num)) if num > 1 else float("nan")
    return TraceEstimate(
        float(samples.mean()), stderr, "hutchinson", num, _seed_repr(seed), distribution
    )


def hutchpp_trace(
    A: Any,
    num_matvecs: int = 99,
    *,
    seed: SeedLike = 0,
    distribution: str = "rademacher",
) -> TraceEstimate:
    """Hutch++: with m = num_matvecs // 3, Q = orth(A S) (S: m probes),
    tr A ≈ tr(Q^T A Q) + (1/m) sum_i g_i^T (I-QQ^T) A (I-QQ^T) g_i. Three passes, 3m products.
    """
    op = as_operator(A)
    num = _positive_int(num_matvecs, "num_matvecs")
    m = num // 3
    if m < 1:
        raise ValueError(f"num_matvecs must be at least 3 for Hutch++, got {num}.")
    rng = _rng(seed)
    dim = op.shape[0]
    S = random_vectors(dim, m, seed=rng, distribution=distribution)
    G = random_vectors(dim, num - 2 * m, seed=rng, distribution=distribution)
    Q = _orth(_apply(op, S), rtol=1e-12)
    top = float(np.trace(Q.T @ _apply(op, Q))) if Q.shape[1] else 0.0
    Gp = G - Q @ (Q.T @ G)
    samples = np.einsum("ds,ds->s", Gp, _apply(op, Gp))
    rest = float(samples.mean())
    stderr = (
        float(np.std(samples, ddof=1) / math.sqrt(samples.size)) if samples.size > 1 else 0.0
    )
    return TraceEstimate(top + rest, stderr, "hutch++", num, _seed_repr(seed), distribution)
