"""Exact eigenvalues of the data Jacobian's correlation matrix ``M = 𝒥𝒥^T``.

The empirical spectral density (ESD) is that of ``M/n`` by default (``scale="n"``, the
empirical second moment, comparable across data-set sizes) or of the raw ``M``
(``scale="none"``). Eigenvalues come from whichever Gram side is smaller, in float64;
there are ``min(n, kd)`` of them (``M`` has ``n - kd`` further exact zeros when kd < n).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from jacspec.errors import check_choice
from jacspec.gram import Gram, check_fits, gram, primal_from_rows

logger = logging.getLogger(__name__)

SCALES = ("n", "none")
_EPS = {"float32": float(np.finfo(np.float32).eps), "float64": float(np.finfo(np.float64).eps)}


@dataclass(frozen=True)
class ESD:
    """Eigenvalues of ``M/n`` (``scale="n"``) or ``M`` (``scale="none"``), descending.

    ``rank`` counts eigenvalues above ``tol = lambda_max * dim * eps`` (numpy's matrix_rank
    rule for a ``dim x dim`` Gram, ``eps`` of the Jacobian's dtype); eigenvalues that
    round-off pushed below zero are set to 0 (``num_negative_clipped`` of them).
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

    @property
    def d(self) -> int:
        return int(np.prod(self.input_shape)) if self.input_shape else 0

    def metrics(self) -> dict[str, Any]:
        """First metric table (see :func:`jacspec.esd.spectral_metrics`)."""
        from jacspec.esd import spectral_metrics

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


def finish_eigenvalues(
    raw: np.ndarray, *, n: int, kd: int, scale: str, dtype: str
) -> tuple[np.ndarray, int, float, int]:
    """Scale, clip round-off below zero, sort descending; return (values, rank, tol, clipped)."""
    check_choice("scale", scale, SCALES)
    vals = np.sort(np.asarray(raw, dtype=np.float64))[::-1].copy()
    if scale == "n":
        vals /= n
    lam_max = float(vals[0]) if vals.size else 0.0
    tol = max(lam_max, 0.0) * vals.size * _EPS.get(dtype, _EPS["float32"])
    negative = vals < 0
    clipped = int(negative.sum())
    worst = float(-vals[negative].min()) if clipped else 0.0
    if worst > max(tol, 1e-300) * 10:
        logger.warning("eigenvalue %.3g below zero exceeds round-off (tol %.3g)", -worst, tol)
    vals[negative] = 0.0
    rank = int((vals > tol).sum())
    return vals, rank, tol, clipped


def esd_from_gram(g: Gram, *, scale: str = "n") -> ESD:
    """The ESD of a :class:`~jacspec.gram.Gram` (exact, float64)."""
    check_choice("scale", scale, SCALES)
    raw = symmetric_eigenvalues(g.matrix)
    if g.num_known_zeros:
        raw = np.concatenate([raw, np.zeros(g.num_known_zeros)])
    vals, rank, tol, clipped = finish_eigenvalues(
        raw, n=g.n, kd=g.k * g.d, scale=scale, dtype=g.dtype
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
    chosen = side if side != "auto" else ("dual" if kd < n else "primal")
    check_fits(chosen, n, kd, J.element_size(), max_memory)
    if chosen == "dual":
        if J.dtype == torch.float64:
            mat = (J.T @ J).numpy()
        else:
            mat = (J.T @ J).to(torch.float64).numpy()
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
    progress: bool = False,
) -> ESD:
    """Exact ESD of the data Jacobian of ``model`` on ``data``.

    Eigenvalues of ``M/n`` (``scale="n"``) or ``M = 𝒥𝒥^T`` (``scale="none"``), computed from
    the smaller Gram side in float64. See :func:`jacspec.gram.gram` for the other arguments.
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
        progress=progress,
    )
    return esd_from_gram(g, scale=scale)
