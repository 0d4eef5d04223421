"""Exact eigenvalues of the data Jacobian's correlation matrix ``M = 𝒥𝒥^T``.

The empirical spectral density (ESD) is that of ``M/n`` by default (``scale="n"``, the
empirical second moment, comparable across data-set sizes) or of the raw ``M``
(``scale="none"``). Eigenvalues come from whichever Gram side is smaller, in float64;
there are ``min(n, kd)`` of them (``M`` has ``n - kd`` further exact zeros when kd < n).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from jacspec._util.validation import check_choice
from jacspec.spectra.gram import Gram, check_fits, gram, gram_side, primal_from_rows

logger = logging.getLogger(__name__)

SCALES = ("n", "none")
_EPS = {"float32": float(np.finfo(np.float32).eps), "float64": float(np.finfo(np.float64).eps)}


@dataclass(frozen=True)
class ESD:
    """Eigenvalues of ``M/n`` (``scale="n"``) or ``M`` (``scale="none"``), descending.

    ``rank`` counts eigenvalues above ``tol`` (:func:`rank_tolerance`: the largest value a
    true zero eigenvalue can take given the Jacobian's rounding error); eigenvalues that
    round-off pushed below zero are set to 0 (``num_negative_clipped`` of them).
    ``unresolved``: quantities the Jacobian's dtype could not resolve ("" if none; see
    :func:`unresolved_quantities`).
    """

    eigenvalues: np.ndarray
    n: int
    k: int
    input_shape: tuple[int, ...]
    side: str
    scale: str
    output: str
    dtype: str
    rank: int
    tol: float
    num_negative_clipped: int = 0
    settings: dict[str, Any] = field(default_factory=dict)
    unresolved: str = ""

    @property
    def d(self) -> int:
        return int(np.prod(self.input_shape)) if self.input_shape else 0

    def metrics(self) -> dict[str, Any]:
        """First metric table (see :func:`jacspec.spectra.metrics.spectral_metrics`)."""
        from jacspec.spectra.metrics import spectral_metrics

        return spectral_metrics(self.eigenvalues, rank=self.rank)

    def describe(self) -> dict[str, Any]:
        """The settings that produced these eigenvalues (JSON-able)."""
        return {
            "n": self.n,
            "k": self.k,
            "d": self.d,
            "input_shape": list(self.input_shape),
            "side": self.side,
            "scale": self.scale,
            "matrix": "M/n" if self.scale == "n" else "M",
            "output": self.output,
            "dtype": self.dtype,
            "tol": self.tol,
            "rank_rule": RANK_RULE,
            "unresolved": self.unresolved,
            "num_negative_clipped": self.num_negative_clipped,
            **self.settings,
        }

    def to_dict(self) -> dict[str, Any]:
        """``{"settings", "eigenvalues", "metrics"}``: the CLI's JSON layout."""
        return {
            "settings": self.describe(),
            "eigenvalues": self.eigenvalues.tolist(),
            "metrics": self.metrics(),
        }

    def to_frame(self) -> pd.DataFrame:
        """One row: the metrics followed by the settings."""
        row = {**self.metrics(), **{k: v for k, v in self.describe().items() if k != "input_shape"}}
        return pd.DataFrame([row])


def symmetric_eigenvalues(matrix: np.ndarray) -> np.ndarray:
    """Eigenvalues of a symmetric float64 matrix, ascending (LAPACK ``syevd`` via torch)."""
    t = torch.from_numpy(np.ascontiguousarray(matrix, dtype=np.float64))
    return torch.linalg.eigvalsh(t).numpy()


#: ``||d𝒥||_2 <= JACOBIAN_ERROR_FACTOR * eps * ||𝒥||_2`` is assumed for a Jacobian computed by
#: backpropagation in a dtype with unit round-off ``eps``: measured ``||d𝒥|| / (eps ||𝒥||)``
#: (float32 against float64 Jacobians of the same trained MLPs, digits) is ~8; 64 leaves 8x.
JACOBIAN_ERROR_FACTOR = 64.0
#: The rank rule, as written into every ESD's settings.
RANK_RULE = "lambda > lambda_max * ((64 eps_J)^2 + dim eps_64)"
#: lambda_max(M) below this warns: the Jacobian's largest entries (~sqrt(lambda_max(M))) are
#: below float32's tiny^(1/4), so rows of less likely classes (softmax p_c ~ e^-margin) are
#: within a few decades of float32's normal range (1.2e-38) and flush to zero first.
FLOAT32_UNDERFLOW_LAMBDA = float(np.sqrt(np.finfo(np.float32).tiny))


def rank_tolerance(
    lambda_max: float, dim: int, dtype: str, *, jac_error2: float | None = None
) -> float:
    """Largest eigenvalue a true zero can show: ``lambda_max ((C eps_J)^2 + dim eps_64)``,
    or ``max(jac_error2, (C eps_J)^2 lambda_max) + dim eps_64 lambda_max`` when a measured
    ``jac_error2 >= ||d𝒥||^2`` (in the eigenvalues' scale) is given.

    Derivation. The Gram is formed in float64 from the Jacobian's rows (float32 products are
    exact in float64), so its only errors are (i) the Jacobian's own error ``d𝒥`` and (ii) the
    float64 Gram and eigensolver rounding. (i): Weyl's inequality for singular values gives
    ``|sigma_i(𝒥 + d𝒥) - sigma_i(𝒥)| <= ||d𝒥||``, hence ``|lambda~_i - lambda_i| <=
    2 sqrt(lambda_i) ||d𝒥|| + ||d𝒥||^2`` (the Weyl bound on the Gram, ``||dG|| <= 2||𝒥||
    ||d𝒥|| + ||d𝒥||^2``, is the uniform worst case of this). A true zero therefore shows at
    most ``||d𝒥||^2 = (C eps_J)^2 lambda_max`` with ``C`` = :data:`JACOBIAN_ERROR_FACTOR`, and
    an eigenvalue ``lambda >> tol`` has relative error ``<= 2 C eps_J sqrt(lambda_max/lambda)``.
    (ii): ``dim eps_64 lambda_max`` (numpy's matrix_rank rule for the float64 Gram). For float32
    Jacobians the floor is ``~6e-11 lambda_max`` (the old rule ``dim eps_32 lambda_max`` was
    ``~7e-5`` for dim 576 and cut accurate eigenvalues); for float64 it is ``dim eps_64``.
    Scale-free: the same for ``M`` and ``M/n``. Saturated softmax outputs break the a priori
    factor (``1 - p_max`` below float32's resolution near 1 gives O(1) relative errors in
    those rows); for softmax rows the class-sum residual ``r_i = sum_c J_i,c`` (exactly 0
    without rounding) measures that error, ``||r||_F ~ ||d𝒥||_F >= ||d𝒥||_2``, and
    :func:`jacspec.analysis.analyze` passes ``jac_error2 = ||r||_F^2`` (divided by n for M/n).
    """
    eps_j = _EPS.get(dtype, _EPS["float32"])
    lam = max(lambda_max, 0.0)
    floor = (JACOBIAN_ERROR_FACTOR * eps_j) ** 2 * lam
    if jac_error2 is not None and jac_error2 > floor:
        floor = float(jac_error2)
    return floor + lam * dim * _EPS["float64"]


def unresolved_quantities(
    vals: np.ndarray, rank: int, dtype: str, *, n: int, scale: str, known_zeros: int = 0
) -> str:
    """Quantities a float32 Jacobian could not resolve, comma-separated ("" if none).

    ``rank`` and ``entropy`` (normalised by ln rank) when eigenvalues other than the
    ``known_zeros`` structural ones (softmax rows sum to zero) fall below the float32 floor
    ``tol`` (they may be true zeros or nonzeros float32 cannot see; a float64 Jacobian,
    ``dtype=torch.float64``, resolves them: its floor is ``~1e-13 lambda_max``);
    ``spectrum`` when ``lambda_max(M)`` is below :data:`FLOAT32_UNDERFLOW_LAMBDA` (float32
    underflow near: every metric is at risk). Float64 Jacobians resolve everything here.
    """
    if dtype == "float64" or vals.size == 0:
        return ""
    out = []
    if rank < vals.size - known_zeros:
        out += ["rank", "entropy"]
    lam_raw = float(vals[0]) * (n if scale == "n" else 1)
    if 0 < lam_raw < FLOAT32_UNDERFLOW_LAMBDA or lam_raw == 0:
        out.append("spectrum")
    return ",".join(out)


def finish_eigenvalues(
    raw: np.ndarray,
    *,
    n: int,
    kd: int,
    scale: str,
    dtype: str,
    jac_error2: float | None = None,
) -> tuple[np.ndarray, int, float, int]:
    """Scale, clip round-off below zero, sort descending; return (values, rank, tol, clipped).

    ``rank`` counts the eigenvalues above ``tol`` = :func:`rank_tolerance` (``dim`` = the
    number of eigenvalues; ``jac_error2``: a measured ``||d𝒥||^2`` of the raw ``M``, scaled
    here like the eigenvalues). Warns (logging) when lambda_max(M) nears float32 underflow.
    """
    check_choice("scale", scale, SCALES)
    vals = np.sort(np.asarray(raw, dtype=np.float64))[::-1].copy()
    if scale == "n":
        vals /= n
    lam_max = float(vals[0]) if vals.size else 0.0
    if jac_error2 is not None and scale == "n":
        jac_error2 = jac_error2 / n
    tol = rank_tolerance(lam_max, vals.size, dtype, jac_error2=jac_error2)
    negative = vals < 0
    clipped = int(negative.sum())
    worst = float(-vals[negative].min()) if clipped else 0.0
    if worst > max(tol, 1e-300) * 10:
        logger.warning("eigenvalue %.3g below zero exceeds round-off (tol %.3g)", -worst, tol)
    vals[negative] = 0.0
    rank = int((vals > tol).sum())
    lam_raw = lam_max * (n if scale == "n" else 1)
    if dtype != "float64" and lam_raw < FLOAT32_UNDERFLOW_LAMBDA:
        logger.warning(
            "lambda_max(M) = %.3g is near float32 underflow (below %.3g): the Jacobian's small "
            "entries may flush to zero; rerun with dtype=torch.float64",
            lam_raw,
            FLOAT32_UNDERFLOW_LAMBDA,
        )
    return vals, rank, tol, clipped


def esd_from_gram(g: Gram, *, scale: str = "n", jac_error2: float | None = None) -> ESD:
    """The ESD of a :class:`~jacspec.spectra.gram.Gram` (exact, float64); ``jac_error2``: a measured
    bound on ``||d𝒥||^2`` for the rank rule (:func:`rank_tolerance`)."""
    check_choice("scale", scale, SCALES)
    raw = symmetric_eigenvalues(g.matrix)
    if g.num_known_zeros:
        raw = np.concatenate([raw, np.zeros(g.num_known_zeros)])
    vals, rank, tol, clipped = finish_eigenvalues(
        raw, n=g.n, kd=g.k * g.d, scale=scale, dtype=g.dtype, jac_error2=jac_error2
    )
    return ESD(
        eigenvalues=vals,
        n=g.n,
        k=g.k,
        input_shape=g.input_shape,
        side=g.side,
        scale=scale,
        output=g.output,
        dtype=g.dtype,
        rank=rank,
        tol=tol,
        num_negative_clipped=clipped,
        settings={"method": "exact", "deflated": g.deflated},
        unresolved=unresolved_quantities(
            vals, rank, g.dtype, n=g.n, scale=scale, known_zeros=g.num_known_zeros
        ),
    )


def eigenvalues_from_jacobian(
    J: torch.Tensor, *, scale: str = "n", side: str = "auto", max_memory: int | None = None
) -> np.ndarray:
    """Exact eigenvalues (descending) of ``𝒥𝒥^T/n`` (or ``𝒥𝒥^T``) for a given ``(n, kd)`` tensor."""
    if not isinstance(J, torch.Tensor) or J.ndim != 2:
        raise ValueError("J must be a 2-D tensor (n, kd): the stacked, flattened Jacobians")
    check_choice("scale", scale, SCALES)
    check_choice("side", side, ("auto", "dual", "primal"))
    n, kd = J.shape
    chosen = gram_side(side, n, kd)
    check_fits(chosen, n, kd, J.element_size(), max_memory)
    if chosen == "dual":
        J64 = J.to(torch.float64)  # exact products of float32 entries (see rank_tolerance)
        mat = (J64.T @ J64).numpy()
    else:
        mat = primal_from_rows(J)
    dtype = str(J.dtype).replace("torch.", "")
    vals, *_ = finish_eigenvalues(symmetric_eigenvalues(mat), n=n, kd=kd, scale=scale, dtype=dtype)
    return vals


def esd(
    model: nn.Module,
    data: Any,
    *,
    output: str = "softmax",
    scale: str = "n",
    side: str = "auto",
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    batch_size: int | None = None,
    max_memory: int | None = None,
    deflate: bool = True,
    jacobian_method: str = "auto",
    progress: bool = False,
) -> ESD:
    """Exact ESD of the data Jacobian of ``model`` on ``data``.

    Eigenvalues of ``M/n`` (``scale="n"``) or ``M = 𝒥𝒥^T`` (``scale="none"``), computed from
    the smaller Gram side in float64. See :func:`jacspec.spectra.gram.gram` for the other arguments
    (``jacobian_method``: the engine's batched backward).
    """
    check_choice("scale", scale, SCALES)
    g = gram(
        model,
        data,
        side=side,
        output=output,
        dtype=dtype,
        device=device,
        batch_size=batch_size,
        max_memory=max_memory,
        deflate=deflate,
        jacobian_method=jacobian_method,
        progress=progress,
    )
    e = esd_from_gram(g, scale=scale)
    return replace(e, settings={**e.settings, "jacobian_method": jacobian_method})
