"""The one exact eigensolve of jacspec, with its one clip and rank rule.

Every exact spectrum (:func:`jacspec.spectra.exact.esd`, the exact branch of
:func:`jacspec.spectra.estimate.estimate_esd`, :func:`jacspec.heavytail.randomized.matrix_esd`)
goes through :func:`exact_eigenvalues`: eigenvalues of a symmetric float64 matrix by LAPACK
``syevd`` (:func:`symmetric_eigenvalues`), known structural zeros appended, scaled by ``1/n``
for ``scale="n"``, sorted descending, round-off negatives clipped to 0, and counted above the
rank tolerance ``tol`` (:func:`rank_tolerance`):

    tol = lambda_max ((64 eps_J)^2 + dim eps_64)      (RANK_RULE)

or ``max(jac_error2, (64 eps_J)^2 lambda_max) + dim eps_64 lambda_max`` with a measured
bound ``jac_error2 >= ||d𝒥||^2``.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np
import torch

from jacspec._util.validation import check_choice

logger = logging.getLogger(__name__)

__all__ = [
    "FLOAT32_UNDERFLOW_LAMBDA",
    "JACOBIAN_ERROR_FACTOR",
    "RANK_RULE",
    "SCALES",
    "ExactEigenvalues",
    "exact_eigenvalues",
    "finish_eigenvalues",
    "rank_tolerance",
    "symmetric_eigenvalues",
    "unresolved_quantities",
    "zero_below_tolerance",
]

SCALES = ("n", "none")
_EPS = {"float32": float(np.finfo(np.float32).eps), "float64": float(np.finfo(np.float64).eps)}

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


def symmetric_eigenvalues(matrix: np.ndarray | torch.Tensor) -> np.ndarray:
    """Eigenvalues of a symmetric float64 matrix, ascending: ``syevd`` via torch, on the
    device of a tensor (cuSOLVER on a GPU; only the eigenvalues come to the host)."""
    if isinstance(matrix, torch.Tensor):
        return torch.linalg.eigvalsh(matrix.to(torch.float64)).cpu().numpy()
    t = torch.from_numpy(np.ascontiguousarray(matrix, dtype=np.float64))
    return torch.linalg.eigvalsh(t).numpy()


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


def zero_below_tolerance(
    eigenvalues: np.ndarray, tol: float | None = None, *, dtype: str = "float64"
) -> tuple[np.ndarray, float]:
    """``(values, tol)``: float64 ``eigenvalues`` with every value ``<= tol`` set to 0.

    The rank rule's other half: an eigenvalue a true zero can show (:func:`rank_tolerance`)
    is a zero for every fit, so the positives left are exactly the ``rank`` counted above
    ``tol``. ``tol``: the ESD's (``ESD.tol``); None: :func:`rank_tolerance` of these values
    (``lambda_max`` = their largest, ``dim`` = their count, Jacobian ``dtype``).
    """
    vals = np.array(eigenvalues, dtype=np.float64).ravel()
    if tol is None:
        lam = float(vals.max()) if vals.size else 0.0
        tol = rank_tolerance(lam, vals.size, dtype)
    vals[vals <= tol] = 0.0
    return vals, float(tol)


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
    kd: int | None = None,
    scale: str,
    dtype: str,
    jac_error2: float | None = None,
) -> tuple[np.ndarray, int, float, int]:
    """Scale, clip round-off below zero, sort descending; return (values, rank, tol, clipped).

    ``rank`` counts the eigenvalues above ``tol`` = :func:`rank_tolerance` (``dim`` = the
    number of eigenvalues; ``jac_error2``: a measured ``||d𝒥||^2`` of the raw ``M``, scaled
    here like the eigenvalues). Warns (logging) when lambda_max(M) nears float32 underflow.
    ``kd`` is accepted for callers that pass the problem's width; the rule does not use it.
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


class ExactEigenvalues(NamedTuple):
    """Output of :func:`exact_eigenvalues`: ``values`` descending (scaled, clipped at 0),
    ``rank`` (count above ``tol``), ``tol`` (:func:`rank_tolerance`), ``clipped`` (round-off
    negatives set to 0) and ``unresolved`` (:func:`unresolved_quantities`)."""

    values: np.ndarray
    rank: int
    tol: float
    clipped: int
    unresolved: str


def exact_eigenvalues(
    matrix: np.ndarray | torch.Tensor,
    *,
    n: int,
    scale: str = "n",
    dtype: str = "float64",
    known_zeros: int = 0,
    jac_error2: float | None = None,
) -> ExactEigenvalues:
    """Eigenvalues of the symmetric Gram ``matrix`` (unscaled, float64) as an ESD reports them.

    ``syevd`` on ``matrix``; ``known_zeros`` exact zeros appended (the structural zeros a
    deflated Gram leaves out); then :func:`finish_eigenvalues` (divide by ``n`` when
    ``scale="n"``, sort descending, clip negatives, rank above :func:`rank_tolerance` with
    the Jacobian's ``dtype`` and optional measured ``jac_error2`` of the raw ``M``).
    """
    check_choice("scale", scale, SCALES)
    raw = symmetric_eigenvalues(matrix)
    if known_zeros:
        raw = np.concatenate([raw, np.zeros(int(known_zeros))])
    vals, rank, tol, clipped = finish_eigenvalues(
        raw, n=n, scale=scale, dtype=dtype, jac_error2=jac_error2
    )
    unresolved = unresolved_quantities(
        vals, rank, dtype, n=n, scale=scale, known_zeros=int(known_zeros)
    )
    return ExactEigenvalues(vals, rank, tol, clipped, unresolved)
