"""The Jacobian Gram matrix as a matrix-free linear operator.

With the data Jacobian 𝒥 (n x kd, row i = flattened J(x_i)) the two Gram sides are

    dual   G = 𝒥^T 𝒥 / c   (kd x kd),     primal  M = 𝒥 𝒥^T / c   (n x n),

with c = n (``scale="n"``) or c = 1 (``scale="none"``). They share their nonzero
eigenvalues. :class:`GramOperator` applies either side to a block of vectors V
(dim x s) in passes over the rows of 𝒥, so one pass serves all s vectors:

    dual:   G V = sum_b J_b^T (J_b V) / c                      (one pass)
    primal: M V = 𝒥 (sum_b J_b^T V_b) / c                      (two passes)

The rows of 𝒥 come from a *row source* (:mod:`jacspec.spectra.rows`, re-exported here):
an array in memory (:class:`ArrayRows`), an ``.npy`` file on disk written batch by batch
(:class:`FileRows`, :func:`write_jacobian_memmap`), a callable that recomputes the row
blocks on every pass (:class:`StreamRows`) or a JacobianSource (:class:`SourceRows`).
"""


from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse.linalg
import torch

from jacspec.spectra.rows import (
    _FLOAT_DTYPES,
    _SCALES,
    _SIDES,
    ArrayRows,
    FileRows,
    RowSource,
    SourceRows,
    StreamRows,
    _check_float_dtype,
    as_rows,
    open_jacobian_memmap,
    write_jacobian_memmap,
)

logger = logging.getLogger(__name__)

__all__ = [
    "ArrayRows",
    "FileRows",
    "GramOperator",
    "LinearOperator",
    "MatrixOperator",
    "RowSource",
    "SourceRows",
    "StreamRows",
    "as_operator",
    "as_rows",
    "gram_operator",
    "open_jacobian_memmap",
    "softmax_null_projector",
    "write_jacobian_memmap",
]


# --------------------------------------------------------------------------- operators


class LinearOperator:
    """Minimal square linear operator on numpy blocks; subclasses implement ``_matmat``.

    ``A @ V`` for V of shape (dim,) or (dim, s), numpy or torch (torch in, torch out).
    The result dtype is ``result_type(V, A.dtype)``. ``num_matvecs`` counts vectors applied
    and ``num_passes`` counts passes over the underlying data.
    """

    shape: tuple[int, int]
    dtype: np.dtype

    def __init__(self, shape: tuple[int, int], dtype: Any) -> None:
        self.shape = (int(shape[0]), int(shape[1]))
        self.dtype = np.dtype(dtype)
        self.num_matvecs = 0
        self.num_passes = 0

    def _matmat(self, V: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def matmat(self, V: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Apply the operator to the columns of V (dim, s)."""
        as_torch = isinstance(V, torch.Tensor)
        arr = V.detach().cpu().numpy() if as_torch else np.asarray(V)
        if arr.ndim != 2 or arr.shape[0] != self.shape[1]:
            raise ValueError(f"V must have shape ({self.shape[1]}, s), got {tuple(arr.shape)}.")
        if arr.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"V must be float32 or float64, got {arr.dtype}.")
        out = self._matmat(arr)
        out = out.astype(np.result_type(arr.dtype, self.dtype), copy=False)
        self.num_matvecs += arr.shape[1]
        if as_torch:
            return torch.from_numpy(np.ascontiguousarray(out)).to(V.device)
        return out

    def matvec(self, v: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Apply the operator to one vector v (dim,)."""
        if v.ndim != 1:
            raise ValueError(f"v must be 1-D, got shape {tuple(v.shape)}.")
        out = self.matmat(v[:, None])
        return out[:, 0]

    def __matmul__(self, V: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        return self.matvec(V) if V.ndim == 1 else self.matmat(V)

    def to_scipy(self) -> scipy.sparse.linalg.LinearOperator:
        """A ``scipy.sparse.linalg.LinearOperator`` with the same action (for eigsh, cg, ...)."""
        sym = self.matmat

        return scipy.sparse.linalg.LinearOperator(
            shape=self.shape,
            dtype=self.dtype,
            matvec=lambda v: sym(np.asarray(v).reshape(-1, 1))[:, 0],
            rmatvec=lambda v: sym(np.asarray(v).reshape(-1, 1))[:, 0],
            matmat=sym,
            rmatmat=sym,
        )

    def to_dense(self, *, block: int = 512) -> np.ndarray:
        """The explicit matrix (dim x dim), built from identity blocks; for small operators."""
        dim = self.shape[1]
        out = np.empty((self.shape[0], dim), dtype=self.dtype)
        for s in range(0, dim, block):
            e = np.zeros((dim, min(block, dim - s)), dtype=self.dtype)
            e[np.arange(s, s + e.shape[1]), np.arange(e.shape[1])] = 1
            out[:, s : s + e.shape[1]] = self.matmat(e)
        return out


class MatrixOperator(LinearOperator):
    """An explicit symmetric matrix (numpy array or CPU tensor) as a :class:`LinearOperator`."""

    def __init__(self, matrix: np.ndarray | torch.Tensor) -> None:
        if isinstance(matrix, torch.Tensor):
            matrix = matrix.detach().cpu().numpy()
        matrix = np.asarray(matrix)
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"matrix must be square 2-D, got shape {matrix.shape}.")
        _check_float_dtype(matrix.dtype, "matrix dtype")
        super().__init__(matrix.shape, matrix.dtype)
        self.matrix = matrix

    def _matmat(self, V: np.ndarray) -> np.ndarray:
        self.num_passes += 1
        return self.matrix @ V.astype(self.dtype, copy=False)


class _ScipyOperator(LinearOperator):
    def __init__(self, op: scipy.sparse.linalg.LinearOperator) -> None:
        if op.shape[0] != op.shape[1]:
            raise ValueError(f"the operator must be square, got shape {op.shape}.")
        super().__init__(op.shape, op.dtype if op.dtype in _FLOAT_DTYPES else np.float64)
        self.op = op

    def _matmat(self, V: np.ndarray) -> np.ndarray:
        self.num_passes += 1
        return np.asarray(self.op.matmat(V))


def as_operator(A: Any) -> LinearOperator:
    """Coerce a :class:`LinearOperator`, square array/tensor or scipy LinearOperator."""
    if isinstance(A, LinearOperator):
        return A
    if isinstance(A, (np.ndarray, torch.Tensor)):
        return MatrixOperator(A)
    if isinstance(A, scipy.sparse.linalg.LinearOperator):
        return _ScipyOperator(A)
    raise TypeError(
        "expected a jacspec LinearOperator, a square numpy array / tensor or a scipy "
        f"LinearOperator, got {type(A).__name__}."
    )


def _row_norms2(J: np.ndarray) -> float:
    """sum_i ||J_i||^2: per-row sums in the data dtype, total in float64."""
    return float(np.einsum("ij,ij->i", J, J).sum(dtype=np.float64))


class GramOperator(LinearOperator):
    """Dual (𝒥^T𝒥/c, kd x kd) or primal (𝒥𝒥^T/c, n x n) Gram over a row source.

    Products run in the source dtype (float32 data: float32 GEMMs) and accumulate across
    row blocks in ``result_type(V, source dtype)``. A dual product is one pass over the rows;
    a primal product is two (W = 𝒥^T V, then 𝒥 W).
    """

    def __init__(self, rows: RowSource, *, side: str = "dual", scale: str = "n") -> None:
        if side not in _SIDES:
            raise ValueError(f"side must be one of {_SIDES}, got {side!r}.")
        if scale not in _SCALES:
            raise ValueError(f"scale must be one of {_SCALES}, got {scale!r}.")
        n, kd = rows.shape
        dim = kd if side == "dual" else n
        super().__init__((dim, dim), rows.dtype)
        self.rows = rows
        self.side = side
        self.scale = scale
        self.n, self.kd = n, kd
        self._c = float(n) if scale == "n" else 1.0
        self._fro: float | None = None

    def _matmat(self, V: np.ndarray) -> np.ndarray:
        acc = np.result_type(V.dtype, self.dtype)
        Vc = V.astype(self.dtype, copy=False)
        fro = 0.0 if self._fro is None else None  # ||𝒥||_F^2 rides along the first pass
        if self.side == "dual":
            out = np.zeros((self.kd, V.shape[1]), dtype=acc)
            for J in self.rows.blocks():
                out += J.T @ (J @ Vc)
                if fro is not None:
                    fro += _row_norms2(J)
            self.num_passes += 1
        else:
            W = np.zeros((self.kd, V.shape[1]), dtype=acc)
            start = 0
            for J in self.rows.blocks():
                W += J.T @ Vc[start : start + J.shape[0]]
                start += J.shape[0]
                if fro is not None:
                    fro += _row_norms2(J)
            Wc = W.astype(self.dtype, copy=False)
            out = np.empty((self.n, V.shape[1]), dtype=acc)
            start = 0
            for J in self.rows.blocks():
                out[start : start + J.shape[0]] = J @ Wc
                start += J.shape[0]
            self.num_passes += 2
        if fro is not None:
            self._fro = fro
        out /= self._c
        return out

    def trace(self) -> float:
        """Exact trace ||𝒥||_F^2 / c (row norms in the data dtype, summed in float64).

        Free after any product (recorded on the first pass), else one pass over the rows.
        """
        if self._fro is None:
            total = 0.0
            for J in self.rows.blocks():
                total += _row_norms2(J)
            self.num_passes += 1
            self._fro = total
        return self._fro / self._c

    def __repr__(self) -> str:
        return (
            f"GramOperator(side={self.side!r}, scale={self.scale!r}, shape={self.shape}, "
            f"dtype={self.dtype}, rows={self.rows.kind} {self.rows.shape})"
        )


def softmax_null_projector(k: int, d: int) -> Callable[[np.ndarray], np.ndarray]:
    """Projector onto the complement of the dual Gram's known null space for softmax outputs.

    Softmax Jacobian rows sum to zero over classes (sum_c p_c = 1), so every row of 𝒥 is
    orthogonal to the d-dim space of class-constant vectors {v : v_c = u for all c}, which
    𝒥^T𝒥 therefore annihilates. P V subtracts the class mean: (P V)_c = V_c - mean_c' V_c'
    for V of shape (k*d, s), class-major like the rows of 𝒥.
    """
    if k < 2 or d < 1:
        raise ValueError(f"k must be >= 2 and d >= 1, got k={k}, d={d}.")

    def project(V: np.ndarray) -> np.ndarray:
        W = V.reshape(k, d, -1)
        return (W - W.mean(axis=0, keepdims=True)).reshape(V.shape)

    return project


def gram_operator(
    source: Any,
    *,
    side: str = "auto",
    scale: str = "n",
    shape: tuple[int, int] | None = None,
    dtype: Any = None,
    block_size: int | None = None,
) -> GramOperator:
    """The Gram of 𝒥 as an operator; ``side="auto"`` follows :func:`jacspec.spectra.gram.gram_side`.

    ``source``: a :class:`~jacspec.jacobian.source.JacobianSource`, array/tensor (n, kd),
    path to a ``.npy`` file of rows, callable returning row batches (then ``shape=(n, kd)``),
    or a row source (see :func:`as_rows`).
    """
    rows = as_rows(source, shape=shape, dtype=dtype, block_size=block_size)
    if side == "auto":
        from jacspec.spectra.gram import gram_side

        side = gram_side(side, rows.shape[0], rows.shape[1])
    return GramOperator(rows, side=side, scale=scale)
