"""The Jacobian Gram matrix as a matrix-free linear operator, computed in torch.

With the data Jacobian 𝒥 (n x kd, row i = flattened J(x_i)) the two Gram sides are

    dual   G = 𝒥^T 𝒥 / c   (kd x kd),     primal  M = 𝒥 𝒥^T / c   (n x n),

with c = n (``scale="n"``) or c = 1 (``scale="none"``). They share their nonzero
eigenvalues. :class:`GramOperator` applies either side to a block of vectors V
(dim x s) in passes over the rows of 𝒥, so one pass serves all s vectors:

    dual:   G V = sum_b J_b^T (J_b V) / c                      (one pass)
    primal: M V = 𝒥 (sum_b J_b^T V_b) / c                      (two passes)

Every operator here is a :class:`LinearOperator`: subclasses implement ``_matmat`` on
torch tensors (and ``_adjoint`` when not symmetric); ``A @ V`` takes a tensor (tensor out)
or a numpy array (numpy out), and :meth:`LinearOperator.to_scipy` gives a
``scipy.sparse.linalg.LinearOperator``. The Gram's products run where the rows are (a
JacobianSource on the GPU: GPU GEMMs, no block copied to the host).

The rows come from a :class:`~jacspec.jacobian.source.JacobianSource`, the one row
abstraction; arrays, ``.npy`` files, callables and the numpy row views of
:mod:`jacspec.spectra.rows` (re-exported here) are turned into one by :func:`as_source`.
"""


from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import scipy.sparse.linalg
import torch

from jacspec.jacobian.source import JacobianSource
from jacspec.spectra.rows import (
    FLOAT_DTYPES,
    OPERATOR_SCALES,
    OPERATOR_SIDES,
    ArrayRows,
    FileRows,
    RowSource,
    SourceRows,
    StreamRows,
    as_rows,
    as_source,
    open_jacobian_memmap,
    source_of_rows,
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
    "as_source",
    "gram_operator",
    "open_jacobian_memmap",
    "softmax_null_projector",
    "source_of_rows",
    "write_jacobian_memmap",
]

_TORCH_FLOATS = (torch.float32, torch.float64)


def torch_dtype(dtype: Any) -> torch.dtype:
    """float32 / float64 as a torch dtype, from a torch or numpy dtype (else TypeError)."""
    if isinstance(dtype, torch.dtype):
        dt = dtype
    else:
        npdt = np.dtype(dtype)
        dt = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}.get(
            npdt, None)  # type: ignore[arg-type]
        if dt is None:
            raise TypeError(f"the dtype must be float32 or float64, got {npdt}.")
    if dt not in _TORCH_FLOATS:
        raise TypeError(f"the dtype must be float32 or float64, got {dt}.")
    return dt


def numpy_dtype(dtype: torch.dtype) -> np.dtype:
    """The numpy dtype of a torch float32 / float64."""
    return np.dtype(str(dtype).replace("torch.", ""))


# --------------------------------------------------------------------------- operators


class LinearOperator:
    """Square linear operator on torch tensors; subclasses implement ``_matmat``.

    ``A @ V`` for V of shape (dim,) or (dim, s): a tensor gives a tensor on V's device, a
    numpy array gives a numpy array (so numpy callers keep working). The result dtype is
    ``promote(V.dtype, A.dtype)``. ``_adjoint()`` returns A^T (default: A, symmetric).
    ``num_matvecs`` counts vectors applied and ``num_passes`` passes over the data behind A.
    """

    shape: tuple[int, int]
    dtype: torch.dtype

    def __init__(self, shape: tuple[int, int], dtype: Any, device: Any = "cpu") -> None:
        self.shape = (int(shape[0]), int(shape[1]))
        self.dtype = torch_dtype(dtype)
        self._device = torch.device(device)
        self.num_matvecs = 0
        self.num_passes = 0

    @property
    def device(self) -> torch.device:
        """Where the products are computed."""
        return self._device

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        """A V for V (dim, s) on :attr:`device`; may return on another device (the data's)."""
        raise NotImplementedError

    def _adjoint(self) -> LinearOperator:
        """The operator A^T; symmetric operators return themselves."""
        return self

    def adjoint(self) -> LinearOperator:
        """A^T as an operator (A itself for the symmetric Gram)."""
        return self._adjoint()

    def apply(self, V: torch.Tensor) -> torch.Tensor:
        """A V for a tensor V (dim, s); the result stays where it was computed (the data's
        device), in ``promote(V.dtype, A.dtype)``. The Krylov methods call this."""
        if V.ndim != 2 or V.shape[0] != self.shape[1]:
            raise ValueError(f"V must have shape ({self.shape[1]}, s), got {tuple(V.shape)}.")
        if V.dtype not in _TORCH_FLOATS:
            raise TypeError(f"V must be float32 or float64, got {V.dtype}.")
        out = self._matmat(V.detach().to(self.device))
        self.num_matvecs += int(V.shape[1])
        return out.to(torch.promote_types(V.dtype, self.dtype))

    def matmat(self, V: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Apply the operator to the columns of V (dim, s): tensor in, tensor out (on V's
        device); numpy in, numpy out."""
        if isinstance(V, torch.Tensor):
            return self.apply(V).to(V.device)
        arr = np.asarray(V)
        if arr.ndim != 2 or arr.shape[0] != self.shape[1]:
            raise ValueError(f"V must have shape ({self.shape[1]}, s), got {tuple(arr.shape)}.")
        if arr.dtype not in FLOAT_DTYPES:
            raise TypeError(f"V must be float32 or float64, got {arr.dtype}.")
        return self.apply(torch.from_numpy(np.ascontiguousarray(arr))).cpu().numpy()

    def matvec(self, v: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Apply the operator to one vector v (dim,)."""
        if v.ndim != 1:
            raise ValueError(f"v must be 1-D, got shape {tuple(v.shape)}.")
        out = self.matmat(v[:, None])
        return out[:, 0]

    def __matmul__(self, V: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        return self.matvec(V) if V.ndim == 1 else self.matmat(V)

    def to_scipy(self) -> scipy.sparse.linalg.LinearOperator:
        """A ``scipy.sparse.linalg.LinearOperator`` with the same action (for eigsh, cg, ...);
        its products go through numpy on the host."""
        adj = self._adjoint()

        def vec(op: LinearOperator) -> Callable[[np.ndarray], np.ndarray]:
            return lambda v: op.matmat(np.asarray(v).reshape(-1, 1))[:, 0]

        return scipy.sparse.linalg.LinearOperator(
            shape=self.shape,
            dtype=numpy_dtype(self.dtype),
            matvec=vec(self),
            rmatvec=vec(adj),
            matmat=self.matmat,
            rmatmat=adj.matmat,
        )

    def to_dense(self, *, block: int = 512) -> np.ndarray:
        """The explicit matrix (dim x dim) as numpy, built from identity blocks; for small
        operators."""
        dim = self.shape[1]
        out = np.empty((self.shape[0], dim), dtype=numpy_dtype(self.dtype))
        for s in range(0, dim, block):
            b = min(block, dim - s)
            e = torch.zeros((dim, b), dtype=self.dtype, device=self.device)
            e[torch.arange(s, s + b), torch.arange(b)] = 1
            out[:, s : s + b] = self.apply(e).cpu().numpy()
        return out


class MatrixOperator(LinearOperator):
    """An explicit square matrix (numpy array or tensor, on its device) as an operator."""

    def __init__(self, matrix: np.ndarray | torch.Tensor) -> None:
        if not isinstance(matrix, torch.Tensor):
            arr = np.asarray(matrix)
            if arr.dtype not in FLOAT_DTYPES:
                raise TypeError(f"matrix dtype must be float32 or float64, got {arr.dtype}.")
            matrix = torch.from_numpy(arr)
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"matrix must be square 2-D, got shape {tuple(matrix.shape)}.")
        if matrix.dtype not in _TORCH_FLOATS:
            raise TypeError(f"matrix dtype must be float32 or float64, got {matrix.dtype}.")
        super().__init__(tuple(matrix.shape), matrix.dtype, matrix.device)
        self.matrix = matrix.detach()

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        self.num_passes += 1
        return self.matrix @ V.to(self.dtype)

    def _adjoint(self) -> LinearOperator:
        return MatrixOperator(self.matrix.T)


class _ScipyOperator(LinearOperator):
    """A scipy LinearOperator seen as a jacspec one (products on the host, through numpy)."""

    def __init__(self, op: scipy.sparse.linalg.LinearOperator) -> None:
        if op.shape[0] != op.shape[1]:
            raise ValueError(f"the operator must be square, got shape {op.shape}.")
        super().__init__(op.shape, op.dtype if op.dtype in FLOAT_DTYPES else np.float64)
        self.op = op

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        self.num_passes += 1
        out = np.asarray(self.op.matmat(V.cpu().numpy()))
        return torch.from_numpy(np.ascontiguousarray(out))

    def _adjoint(self) -> LinearOperator:
        return _ScipyOperator(self.op.H)


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


def _row_norms2(J: torch.Tensor) -> torch.Tensor:
    """sum_i ||J_i||^2: per-row sums in the data dtype, total in float64 (a 0-d tensor)."""
    return (J * J).sum(dim=1).to(torch.float64).sum()


def _source_device(source: JacobianSource) -> torch.device:
    """Where a source's rows are expected before the first pass: its options' device, else
    the CPU (a product then follows the rows wherever they turn out to be)."""
    opts = getattr(source, "options", None)
    dev = getattr(opts, "device", None) if opts is not None else None
    return torch.device(dev) if dev is not None else torch.device("cpu")


class GramOperator(LinearOperator):
    """Dual (𝒥^T𝒥/c, kd x kd) or primal (𝒥𝒥^T/c, n x n) Gram over a JacobianSource.

    Products run in torch on the rows' device (the device of the pass's first block;
    :attr:`device` follows it) in the source dtype (float32 rows: float32 GEMMs) and
    accumulate across row blocks in ``promote(V.dtype, source dtype)``. A dual product is
    one pass over the rows; a primal product is two (W = 𝒥^T V, then 𝒥 W). ``rows`` may also
    be a numpy row view of :mod:`jacspec.spectra.rows` (turned into a source).
    """

    def __init__(self, rows: JacobianSource | RowSource, *, side: str = "dual",
                 scale: str = "n") -> None:
        if side not in OPERATOR_SIDES:
            raise ValueError(f"side must be one of {OPERATOR_SIDES}, got {side!r}.")
        if scale not in OPERATOR_SCALES:
            raise ValueError(f"scale must be one of {OPERATOR_SCALES}, got {scale!r}.")
        source = rows if isinstance(rows, JacobianSource) else source_of_rows(rows)
        n, kd = source.count(), source.cols
        dim = kd if side == "dual" else n
        super().__init__((dim, dim), source.dtype, _source_device(source))
        self.source = source
        self.side = side
        self.scale = scale
        self.n, self.kd = int(n), int(kd)
        self._c = float(n) if scale == "n" else 1.0
        self._fro: float | None = None

    def _blocks(self) -> Iterator[torch.Tensor]:
        """One pass of row blocks (b, kd) in the operator's dtype, on the device of the
        pass's first block (which :attr:`device` then records); the row count is checked."""
        seen = 0
        dev: torch.device | None = None
        for J in self.source.rows():
            J = J.detach()
            if J.ndim != 2 or J.shape[1] != self.kd:
                raise ValueError(
                    f"a row block has shape {tuple(J.shape)}, expected (b, {self.kd}).")
            if dev is None:
                dev = J.device
                self._device = dev
            J = J.to(device=dev, dtype=self.dtype)
            seen += int(J.shape[0])
            if seen > self.n:
                raise ValueError(f"the Jacobian source gave more than the expected n={self.n} "
                                 "rows.")
            yield J
        if seen != self.n:
            raise ValueError(f"the Jacobian source gave {seen} rows, expected n={self.n}.")

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        acc = torch.promote_types(V.dtype, self.dtype)
        fro = None if self._fro is not None else 0.0  # ||𝒥||_F^2 rides along the first pass
        s = int(V.shape[1])
        if self.side == "dual":
            out = Vc = None
            for J in self._blocks():
                if out is None:
                    Vc = V.to(device=J.device, dtype=self.dtype)
                    out = torch.zeros((self.kd, s), dtype=acc, device=J.device)
                out += J.T @ (J @ Vc)
                if fro is not None:
                    fro = fro + _row_norms2(J)
            self.num_passes += 1
        else:
            W = Vc = None
            start = 0
            for J in self._blocks():
                if W is None:
                    Vc = V.to(device=J.device, dtype=self.dtype)
                    W = torch.zeros((self.kd, s), dtype=acc, device=J.device)
                W += J.T @ Vc[start : start + J.shape[0]]
                start += J.shape[0]
                if fro is not None:
                    fro = fro + _row_norms2(J)
            assert W is not None
            Wc = W.to(self.dtype)
            out = torch.empty((self.n, s), dtype=acc, device=W.device)
            start = 0
            for J in self._blocks():
                out[start : start + J.shape[0]] = J @ Wc.to(J.device)
                start += J.shape[0]
            self.num_passes += 2
        assert out is not None
        if fro is not None:
            self._fro = float(fro)
        return out / self._c

    def trace(self) -> float:
        """Exact trace ||𝒥||_F^2 / c (row norms in the data dtype, summed in float64).

        Free after any product (recorded on the first pass), else one pass over the rows.
        """
        if self._fro is None:
            total: Any = 0.0
            for J in self._blocks():
                total = total + _row_norms2(J)
            self.num_passes += 1
            self._fro = float(total)
        return self._fro / self._c

    def __repr__(self) -> str:
        return (
            f"GramOperator(side={self.side!r}, scale={self.scale!r}, shape={self.shape}, "
            f"dtype={str(self.dtype).replace('torch.', '')}, device={self.device}, "
            f"rows={self.source.kind} ({self.n}, {self.kd}))"
        )


def softmax_null_projector(k: int, d: int) -> Callable[[Any], Any]:
    """Projector onto the complement of the dual Gram's known null space for softmax outputs.

    Softmax Jacobian rows sum to zero over classes (sum_c p_c = 1), so every row of 𝒥 is
    orthogonal to the d-dim space of class-constant vectors {v : v_c = u for all c}, which
    𝒥^T𝒥 therefore annihilates. P V subtracts the class mean: (P V)_c = V_c - mean_c' V_c'
    for V of shape (k*d, s), class-major like the rows of 𝒥; numpy or torch in, same out.
    """
    if k < 2 or d < 1:
        raise ValueError(f"k must be >= 2 and d >= 1, got k={k}, d={d}.")

    def project(V: Any) -> Any:
        W = V.reshape(k, d, -1)
        if isinstance(W, torch.Tensor):
            return (W - W.mean(dim=0, keepdim=True)).reshape(V.shape)
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

    ``source``: a :class:`~jacspec.jacobian.source.JacobianSource`, array/tensor (n, kd) on
    any device, path to a ``.npy`` file of rows, callable returning row batches (then
    ``shape=(n, kd)``), or a numpy row view (see :func:`as_source`).
    """
    src = as_source(source, shape=shape, dtype=dtype, block_size=block_size)
    if side == "auto":
        from jacspec.spectra.gram import gram_side

        side = gram_side(side, src.count(), src.cols)
    return GramOperator(src, side=side, scale=scale)
