"""Lanczos recurrences and top-k eigenvalues from matrix-vector products.

Functions take a symmetric operator A (dim x dim): a
:class:`jacspec.spectra.operators.LinearOperator` (e.g. a
:class:`~jacspec.spectra.operators.GramOperator`), a square array / tensor, or a scipy
LinearOperator. They apply A to blocks of vectors, so one pass over the data behind A serves
a whole block. Results are float64 numpy; :func:`lanczos` keeps its vectors in torch where A
computes (the small tridiagonal eigenproblems run on the host, in scipy).

- :func:`lanczos`: s Lanczos recurrences in lockstep with full reorthogonalization, giving
  tridiagonals T_i (m x m) with A Q_i = Q_i T_i + beta_m q_{m+1} e_m^T.
- :func:`top_eigenvalues`: block Lanczos or randomized subspace iteration + Rayleigh-Ritz.
- :func:`random_vectors`: the Rademacher / Gaussian probes every estimator here draws.

Stochastic Lanczos quadrature is in :mod:`jacspec.spectra.slq`, trace estimators in
:mod:`jacspec.spectra.traces`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import scipy.linalg
import torch

from jacspec._util.json import jsonable
from jacspec._util.progress import progress_bar
from jacspec._util.random import numpy_generator
from jacspec._util.validation import positive_int
from jacspec.spectra.operators import LinearOperator, as_operator

logger = logging.getLogger(__name__)

__all__ = [
    "LanczosRun",
    "TopEigenvalues",
    "lanczos",
    "random_vectors",
    "top_eigenvalues",
]

_DISTRIBUTIONS = ("rademacher", "normal")
SeedLike = int | np.random.Generator | None


def seed_repr(seed: SeedLike) -> int | str | None:
    """The seed as recorded in a result's params (an int or None; a Generator by name)."""
    return seed if isinstance(seed, (int, type(None))) else "Generator"



def random_vectors(
    dim: int, num: int, *, seed: SeedLike = 0, distribution: str = "rademacher"
) -> np.ndarray:
    """Random probe vectors (dim, num) in float64: Rademacher ±1 or standard normal entries."""
    dim, num = positive_int("dim", dim), positive_int("num", num)
    rng = numpy_generator(seed)
    if distribution == "rademacher":
        return rng.choice(np.array([-1.0, 1.0]), size=(dim, num))
    if distribution == "normal":
        return rng.standard_normal((dim, num))
    raise ValueError(f"distribution must be one of {_DISTRIBUTIONS}, got {distribution!r}.")


def apply_operator(op: LinearOperator, V: np.ndarray) -> np.ndarray:
    """``op @ V`` for a block of vectors, as float64."""
    return np.asarray(op.matmat(V), dtype=np.float64)


def _progress(total: int, desc: str, enabled: bool) -> Any:
    return progress_bar(enabled, total=total, desc=desc, unit="pass")



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

    @property
    def settings(self) -> dict[str, Any]:
        """What produced the run: number of recurrences, steps requested, passes over A."""
        return {
            "method": "lanczos",
            "num_vectors": int(self.alphas.shape[0]),
            "num_steps": int(self.alphas.shape[1]),
            "num_passes": int(self.num_passes),
            "store_images": self.basis is not None,
        }

    def summary(self) -> dict[str, Any]:
        """Headline numbers: the settings and the steps each recurrence took."""
        return jsonable({**self.settings, "steps_taken": self.steps})

    def to_dict(self) -> dict[str, Any]:
        """Settings and the tridiagonals (bases and images left out: dim x m per run)."""
        return jsonable({
            "settings": self.settings,
            "alphas": self.alphas,
            "betas": self.betas,
            "steps": self.steps,
            "start_norms": self.start_norms,
        })

    def to_frame(self) -> Any:
        """One row per (run, step): ``alpha`` and the following ``beta`` (NaN at the end)."""
        import pandas as pd

        rows = []
        for i in range(self.alphas.shape[0]):
            a, b = self.tridiagonal(i)
            for j in range(a.size):
                rows.append({"run": i, "step": j, "alpha": a[j],
                             "beta": b[j] if j < b.size else float("nan")})
        return pd.DataFrame(rows, columns=["run", "step", "alpha", "beta"])


def lanczos(
    A: Any,
    start: np.ndarray | torch.Tensor,
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
    The vectors are float64 torch tensors on the device where A computes (a GPU Gram: the
    GPU), only the tridiagonals' entries come to the host. Memory: s * num_steps * dim
    float64 (twice with ``store_images``).
    """
    op = as_operator(A)
    num_steps = positive_int("num_steps", num_steps)
    V0 = torch.as_tensor(start, dtype=torch.float64).to(op.device)
    if V0.ndim == 1:
        V0 = V0[:, None]
    dim = op.shape[0]
    if V0.ndim != 2 or V0.shape[0] != dim:
        raise ValueError(f"start must have shape ({dim}, s), got {tuple(np.shape(start))}.")
    s, m = int(V0.shape[1]), min(num_steps, dim)
    norms_t = torch.linalg.norm(V0, dim=0)
    norms = norms_t.cpu().numpy()
    if np.any(norms == 0) or not np.all(np.isfinite(norms)):
        raise ValueError("start vectors must be finite and nonzero.")
    alphas, betas = np.full((s, m), np.nan), np.full((s, max(m - 1, 0)), np.nan)
    steps, scale = np.zeros(s, dtype=int), np.zeros(s)
    q = V0 / norms_t
    w = op.apply(q).to(torch.float64)  # the first product says where A computes
    dev = w.device
    q = q.to(dev)
    basis = torch.zeros((s, m, dim), dtype=torch.float64, device=dev)
    images = torch.zeros_like(basis) if store_images else None
    q_prev, beta_prev = torch.zeros_like(q), torch.zeros(s, dtype=torch.float64, device=dev)
    active = np.arange(s)
    bar = _progress(m, "lanczos", progress)
    passes = 1
    for j in range(m):
        idx = torch.as_tensor(active, device=dev)
        if j > 0:
            w = op.apply(q).to(torch.float64)
            passes += 1
        basis[idx, j, :] = q.T
        if images is not None:
            images[idx, j, :] = w.T
        alpha = (q * w).sum(dim=0)
        w = w - q * alpha - q_prev * beta_prev
        Qa = basis[:, : j + 1, :] if active.size == s else basis[idx, : j + 1, :]
        wt = w.T.contiguous()[:, :, None]  # (a, dim, 1)
        for _ in range(2):
            wt = wt - Qa.transpose(1, 2) @ (Qa @ wt)
        w = wt[:, :, 0].T
        beta_t = torch.linalg.norm(w, dim=0)
        alpha_h, beta = alpha.cpu().numpy(), beta_t.cpu().numpy()
        alphas[active, j] = alpha_h
        steps[active] = j + 1
        scale[active] = np.maximum(scale[active], np.abs(alpha_h) + beta
                                   + beta_prev.cpu().numpy())
        if bar is not None:
            bar.update(1)
        if j == m - 1:
            break
        keep = beta > tol * np.maximum(scale[active], np.finfo(float).tiny)
        betas[active[keep], j] = beta[keep]
        if not np.any(keep):
            break
        kt = torch.as_tensor(keep, device=dev)
        q_prev, q, beta_prev = q[:, kt], w[:, kt] / beta_t[kt], beta_t[kt]
        active = active[keep]
    if bar is not None:
        bar.close()
    return LanczosRun(alphas, betas, steps, norms, passes,
                      basis.cpu().numpy() if store_images else None,
                      None if images is None else images.cpu().numpy())


def rayleigh_ritz(
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


def ritz(alpha: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nodes θ (eigenvalues of T) and Gauss weights τ = (first eigenvector components)^2."""
    if alpha.size == 1:
        return alpha.copy(), np.ones(1)
    theta, U = scipy.linalg.eigh_tridiagonal(alpha, beta)
    return theta, U[0, :] ** 2



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

    @property
    def settings(self) -> dict[str, Any]:
        """What produced the values (method, k, steps, block size, seed, cost)."""
        return {
            "method": self.method,
            "k": self.k,
            "num_steps": self.num_steps,
            "block_size": self.block_size,
            "seed": self.seed,
            "num_matvecs": self.num_matvecs,
            "num_passes": self.num_passes,
        }

    def summary(self) -> dict[str, Any]:
        """Headline numbers: lambda_max, the largest residual and the settings."""
        worst = float(np.max(self.residuals)) if self.residuals.size else float("nan")
        return jsonable({"lambda_max": self.lambda_max, "max_residual": worst, **self.settings})

    def to_dict(self) -> dict[str, Any]:
        return jsonable({f.name: getattr(self, f.name) for f in fields(self)})

    def to_frame(self) -> Any:
        import pandas as pd

        return pd.DataFrame({"eigenvalue": self.values, "residual": self.residuals})


def orthonormal_basis(W: np.ndarray, rtol: float = 1e-10) -> np.ndarray:
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
    k = positive_int("k", k)
    num_steps = positive_int("num_steps", num_steps)
    dim = op.shape[0]
    if k > dim:
        raise ValueError(f"k must be at most the dimension {dim}, got {k}.")
    b = positive_int("block_size", block_size or min(dim, k + 5))
    if method not in ("lanczos", "subspace"):
        raise ValueError(f"method must be 'lanczos' or 'subspace', got {method!r}.")
    mv0 = op.num_matvecs
    Q = orthonormal_basis(random_vectors(dim, min(b, dim), seed=seed, distribution="normal"))
    bar = _progress(num_steps, f"top-{k} ({method})", progress)
    if method == "lanczos":
        B, AB, passes = _block_lanczos_basis(op, Q, num_steps, dim, bar)
    else:
        B, AB, passes = _subspace_iteration(op, Q, num_steps, bar)
    if bar is not None:
        bar.close()
    theta, resid = _ritz_top(B, AB, k)
    if theta.size < k:
        logger.warning("top_eigenvalues: Krylov space has %d directions (< k=%d)", theta.size, k)
    return TopEigenvalues(
        values=theta,
        residuals=resid,
        method=method,
        k=k,
        num_steps=num_steps,
        block_size=b,
        seed=seed_repr(seed),
        num_matvecs=op.num_matvecs - mv0,
        num_passes=passes,
    )


def _block_lanczos_basis(
    op: LinearOperator, Q: np.ndarray, num_steps: int, dim: int, bar: Any
) -> tuple[np.ndarray, np.ndarray, int]:
    """Orthonormal basis B = [Q_0, ..., Q_{m-1}] of the block Krylov space K_m(A, Q), its
    image A B, and the passes taken (stops early once B spans ``dim`` directions or the
    next block is empty)."""
    basis: list[np.ndarray] = []
    images: list[np.ndarray] = []
    total = passes = 0
    for _ in range(num_steps):
        W = apply_operator(op, Q)
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
        Q = orthonormal_basis(R, rtol=1e-8)
        if Q.shape[1] == 0:
            break
        for _ in range(2):  # keep the new block orthogonal to the basis after truncation
            Q -= B @ (B.T @ Q)
        Q = orthonormal_basis(Q)
    return np.concatenate(basis, axis=1), np.concatenate(images, axis=1), passes


def _subspace_iteration(
    op: LinearOperator, Q: np.ndarray, num_steps: int, bar: Any
) -> tuple[np.ndarray, np.ndarray, int]:
    """Randomized subspace iteration Q <- orth(A Q), ``num_steps`` passes; returns the last
    iterate Q, W = A Q (for Rayleigh-Ritz) and the passes taken."""
    W = Q
    passes = 0
    for it in range(num_steps):
        W = apply_operator(op, Q)
        passes += 1
        if bar is not None:
            bar.update(1)
        if it < num_steps - 1:
            Q = orthonormal_basis(W)
    return Q, W, passes


def _ritz_top(B: np.ndarray, AB: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k eigenvalues θ of H = B^T A B (B orthonormal columns, AB = A B), descending, and
    the residual norms ||A y - θ y|| of their Ritz vectors y = B z."""
    H = B.T @ AB
    H = 0.5 * (H + H.T)
    theta, Z = np.linalg.eigh(H)
    order = np.argsort(theta)[::-1][:k]
    theta, Z = theta[order], Z[:, order]
    resid = np.linalg.norm(AB @ Z - (B @ Z) * theta, axis=0)
    return theta, resid
