"""The Jacobian Gram matrix as a matrix-free linear operator.

With the data Jacobian 𝒥 (n x kd, row i = flattened J(x_i)) the two Gram sides are

    dual   G = 𝒥^T 𝒥 / c   (kd x kd),     primal  M = 𝒥 𝒥^T / c   (n x n),

with c = n (``scale="n"``) or c = 1 (``scale="none"``). They share their nonzero
eigenvalues. :class:`GramOperator` applies either side to a block of vectors V
(dim x s) in passes over the rows of 𝒥, so one pass serves all s vectors:

    dual:   G V = sum_b J_b^T (J_b V) / c                      (one pass)
    primal: M V = 𝒥 (sum_b J_b^T V_b) / c                      (two passes)

The rows of 𝒥 come from a *row source*: an array in memory (:class:`ArrayRows`),
an ``.npy`` file on disk written batch by batch (:class:`FileRows`,
:func:`write_jacobian_memmap`), or a callable that recomputes the row blocks on
every pass (:class:`StreamRows`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import scipy.sparse.linalg
import torch

from jacspec.jacobian.source import JacobianSource, write_rows
from jacspec.jacobian.source import _numpy_rows as _to_numpy_rows

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

_SIDES = ("dual", "primal")
_SCALES = ("n", "none")
_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _check_float_dtype(dtype: Any, what: str) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in _FLOAT_DTYPES:
        raise TypeError(f"{what} must be float32 or float64, got {dt}.")
    return dt


# --------------------------------------------------------------------------- row sources


@runtime_checkable
class RowSource(Protocol):
    """Anything that yields the rows of 𝒥 (n x kd) in order, as numpy blocks (b, kd)."""

    shape: tuple[int, int]
    dtype: np.dtype
    kind: str

    def blocks(self) -> Iterator[np.ndarray]:
        """Yield consecutive row blocks (b, kd); a block is valid until the next is requested."""
        ...


@dataclass(frozen=True)
class ArrayRows:
    """Rows of 𝒥 held in memory: a numpy array or CPU tensor (n, kd) or (n, k, *input_shape)."""

    array: np.ndarray
    block_size: int = 4096
    kind: str = "memory"

    def __post_init__(self) -> None:
        arr = _to_numpy_rows(self.array)
        _check_float_dtype(arr.dtype, "the Jacobian array dtype")
        if self.block_size < 1:
            raise ValueError(f"block_size must be a positive int, got {self.block_size}.")
        object.__setattr__(self, "array", arr)

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.array.shape[0]), int(self.array.shape[1]))

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    def blocks(self) -> Iterator[np.ndarray]:
        for start in range(0, self.shape[0], self.block_size):
            yield self.array[start : start + self.block_size]


@dataclass(frozen=True)
class FileRows:
    """Rows of 𝒥 in a 2-D C-ordered ``.npy`` file, read block by block with plain reads.

    Plain reads (not ``mmap``) keep the resident memory of the process at one block
    (``block_size * kd`` values) however large the file; the OS page cache does the rest.
    """

    path: Path
    block_size: int = 1024
    kind: str = "file"

    def __post_init__(self) -> None:
        path = Path(self.path)
        if not path.is_file():
            raise OSError(f"Jacobian file {str(path)!r} does not exist.")
        if self.block_size < 1:
            raise ValueError(f"block_size must be a positive int, got {self.block_size}.")
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            offset = f.tell()
        if len(shape) != 2 or fortran:
            raise ValueError(
                f"Jacobian file {str(path)!r} must hold a C-ordered 2-D array, got shape {shape}."
            )
        _check_float_dtype(dtype, f"the dtype of {str(path)!r}")
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "_shape", (int(shape[0]), int(shape[1])))
        object.__setattr__(self, "_dtype", np.dtype(dtype))
        object.__setattr__(self, "_offset", int(offset))

    @property
    def shape(self) -> tuple[int, int]:
        return self._shape  # type: ignore[attr-defined]

    @property
    def dtype(self) -> np.dtype:
        return self._dtype  # type: ignore[attr-defined]

    def blocks(self) -> Iterator[np.ndarray]:
        n, kd = self.shape
        rows = min(self.block_size, max(n, 1))
        buf = np.empty((rows, kd), dtype=self.dtype)
        with open(self.path, "rb", buffering=0) as f:
            f.seek(self._offset)  # type: ignore[attr-defined]
            for start in range(0, n, rows):
                b = min(rows, n - start)
                view = buf[:b]
                mem = memoryview(view).cast("B")
                got = 0
                while got < mem.nbytes:
                    r = f.readinto(mem[got:])
                    if not r:
                        raise OSError(f"Jacobian file {str(self.path)!r} ended early.")
                    got += r
                yield view


@dataclass(frozen=True)
class StreamRows:
    """Rows of 𝒥 recomputed on every pass: ``make_blocks()`` returns an iterable of batches.

    A batch is a JacobianBatch, a Tensor or an array of shape (b, kd) or (b, k, *input_shape).
    ``shape`` (n, kd) must be known up front; every pass is checked against it.
    """

    make_blocks: Callable[[], Iterable[Any]]
    shape: tuple[int, int]
    dtype: np.dtype = np.dtype(np.float32)
    kind: str = "stream"

    def __post_init__(self) -> None:
        if not callable(self.make_blocks):
            raise TypeError("make_blocks must be a callable returning an iterable of batches.")
        if len(self.shape) != 2 or min(self.shape) < 1:
            raise ValueError(f"shape must be (n, kd) with positive entries, got {self.shape}.")
        object.__setattr__(self, "shape", (int(self.shape[0]), int(self.shape[1])))
        object.__setattr__(self, "dtype", _check_float_dtype(self.dtype, "dtype"))

    def blocks(self) -> Iterator[np.ndarray]:
        n, kd = self.shape
        seen = 0
        for batch in self.make_blocks():
            block = _to_numpy_rows(batch)
            if block.shape[1] != kd:
                raise ValueError(f"a streamed batch has {block.shape[1]} columns, expected {kd}.")
            if block.dtype != self.dtype:
                raise TypeError(f"a streamed batch has dtype {block.dtype}, expected {self.dtype}.")
            seen += block.shape[0]
            if seen > n:
                raise ValueError(f"the stream yielded more than the declared n={n} rows.")
            yield block
        if seen != n:
            raise ValueError(f"the stream yielded {seen} rows, expected n={n}.")


class SourceRows:
    """Rows of 𝒥 from a :class:`~jacspec.jacobian.source.JacobianSource`, one pass per
    product (array and file sources read their memory or file; model sources recompute)."""

    def __init__(self, source: JacobianSource) -> None:
        n = source.count()
        self.source = source
        self.shape = (int(n), int(source.cols))
        self.dtype = np.dtype(str(source.dtype).replace("torch.", ""))
        self.kind = f"source:{source.kind}"

    def blocks(self) -> Iterator[np.ndarray]:
        seen = 0
        for batch in self.source:
            block = _to_numpy_rows(batch)
            if block.dtype != self.dtype:
                block = block.astype(self.dtype)
            seen += block.shape[0]
            yield block
        if seen != self.shape[0]:
            raise ValueError(f"the Jacobian source gave {seen} rows, expected n={self.shape[0]}.")


def as_rows(
    source: Any,
    *,
    shape: tuple[int, int] | None = None,
    dtype: Any = None,
    block_size: int | None = None,
) -> RowSource:
    """Coerce ``source`` into a row source.

    Accepted: a row source; a :class:`~jacspec.jacobian.source.JacobianSource`; a numpy
    array or CPU tensor (n, kd) / (n, k, *input_shape);
    a path to a ``.npy`` file; a callable returning an iterable of row batches (needs
    ``shape=(n, kd)`` and optionally ``dtype``, default float32).
    """
    if isinstance(source, (ArrayRows, FileRows, StreamRows, SourceRows)):
        return source
    if isinstance(source, JacobianSource):
        return SourceRows(source)
    if isinstance(source, (np.ndarray, torch.Tensor)):
        return ArrayRows(source, block_size=block_size or 4096)
    if isinstance(source, (str, os.PathLike)):
        return FileRows(Path(source), block_size=block_size or 1024)
    if callable(source):
        if shape is None:
            raise ValueError("shape=(n, kd) is required for a streamed (callable) Jacobian source.")
        return StreamRows(source, shape=shape, dtype=np.dtype(dtype or np.float32))
    if isinstance(source, RowSource):
        return source
    raise TypeError(
        "source must be an array/tensor (n, kd), a path to a .npy file, a callable returning "
        f"row batches, or a row source; got {type(source).__name__}."
    )


# --------------------------------------------------------------------------- writing 𝒥


def write_jacobian_memmap(
    batches: Iterable[Any],
    path: str | os.PathLike,
    *,
    dtype: Any = np.float32,
    progress: bool = False,
) -> tuple[Path, tuple[int, int]]:
    """Write Jacobian batches as the rows of 𝒥 into a 2-D ``.npy`` file; return (path, (n, kd)).

    ``batches`` yields JacobianBatch objects (their ``.jac``), Tensors or arrays of shape
    (b, kd) or (b, k, *input_shape), e.g. ``jacspec.jacobian.engine.iter_jacobians(model, data)``.
    Rows are cast to ``dtype`` (float32 default) and appended with plain writes, so memory
    stays at one batch. Open the result with :func:`open_jacobian_memmap` or :class:`FileRows`.
    """
    dt = _check_float_dtype(dtype, "dtype")
    path = Path(path)
    it: Iterable[Any] = batches
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(batches, desc="writing 𝒥", unit="batch")
    n, kd = write_rows((_to_numpy_rows(b) for b in it), path, dtype=dt)
    logger.info("wrote 𝒥 of shape (%d, %d) %s to %s", n, kd, dt, path)
    return path, (n, kd)


def open_jacobian_memmap(path: str | os.PathLike) -> np.memmap:
    """Open a file written by :func:`write_jacobian_memmap` as a read-only memmap (n, kd)."""
    arr = np.load(Path(path), mmap_mode="r")
    if arr.ndim != 2:
        raise ValueError(f"{str(path)!r} does not hold a 2-D Jacobian array.")
    return arr


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
