"""Numpy views of the rows of the data Jacobian 𝒥 (n x kd), and their way into a source.

The spectra read rows through one abstraction, the
:class:`~jacspec.jacobian.source.JacobianSource` (torch blocks, on their device):
:func:`as_source` makes one from an array or tensor, an ``.npy`` file, a callable of row
batches or a numpy row view. The row views here are that source's numpy side, for numpy
users: an array in memory (:class:`ArrayRows`), an ``.npy`` file on disk written batch by
batch (:class:`FileRows`, :func:`write_jacobian_memmap`; plain reads, one block resident),
a callable that recomputes the row blocks on every pass (:class:`StreamRows`) or a source
(:class:`SourceRows`); :func:`as_rows` coerces any of them and :func:`source_of_rows` turns
one back into a source. :mod:`jacspec.spectra.operators` re-exports every name.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from jacspec._util.progress import progress_bar
from jacspec.jacobian.engine import JacobianBatch
from jacspec.jacobian.source import JacobianSource, numpy_rows, write_rows

logger = logging.getLogger("jacspec.spectra.operators")

__all__ = [
    "ArrayRows",
    "FileRows",
    "RowSource",
    "SourceRows",
    "StreamRows",
    "as_rows",
    "as_source",
    "open_jacobian_memmap",
    "source_of_rows",
    "write_jacobian_memmap",
]

OPERATOR_SIDES = ("dual", "primal")
OPERATOR_SCALES = ("n", "none")
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _check_float_dtype(dtype: Any, what: str) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in FLOAT_DTYPES:
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
        arr = numpy_rows(self.array)
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
            block = numpy_rows(batch)
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
            block = numpy_rows(batch)
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


def source_of_rows(rows: RowSource) -> JacobianSource:
    """A numpy row view as a :class:`~jacspec.jacobian.source.JacobianSource` (k = 1,
    input_shape = (kd,)): its blocks become CPU tensors sharing their memory (read-only
    blocks are copied), every iteration a fresh pass; a :class:`SourceRows` gives back its
    own source."""
    if isinstance(rows, SourceRows):
        return rows.source
    if not isinstance(rows, RowSource):
        raise TypeError(f"rows must be a row source, got {type(rows).__name__}.")
    n, kd = (int(s) for s in rows.shape)

    def make() -> Iterator[JacobianBatch]:
        start = 0
        for block in rows.blocks():
            if isinstance(block, np.ndarray):
                block = torch.from_numpy(block if block.flags.writeable else np.array(block))
            yield JacobianBatch(jac=block.reshape(block.shape[0], 1, kd), x=None, y=None,
                                out=None, start=start)
            start += int(block.shape[0])

    dtype = torch.float64 if np.dtype(rows.dtype) == np.float64 else torch.float32
    return JacobianSource(make, n=n, k=1, input_shape=(kd,), dtype=dtype,
                          rows_sum_to_zero=False, output="logits", kind=f"rows:{rows.kind}")


def as_source(
    source: Any,
    *,
    shape: tuple[int, int] | None = None,
    dtype: Any = None,
    block_size: int | None = None,
) -> JacobianSource:
    """Coerce ``source`` into a :class:`~jacspec.jacobian.source.JacobianSource`.

    Accepted: a source (returned as is); an array or tensor (n, kd) / (n, k, *input_shape)
    on any device (:meth:`JacobianSource.from_array`, tensors kept where they are; blocks
    of ``block_size``, default 4096 rows); a path to a ``.npy`` file (:class:`FileRows`,
    ``block_size`` default 1024); a callable returning an iterable of row batches (needs
    ``shape=(n, kd)``, ``dtype`` default float32); a numpy row view.
    """
    if isinstance(source, JacobianSource):
        return source
    if isinstance(source, (np.ndarray, torch.Tensor)):
        return JacobianSource.from_array(source, batch_size=block_size or 4096)
    return source_of_rows(as_rows(source, shape=shape, dtype=dtype, block_size=block_size))


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
    it: Iterable[Any] = progress_bar(progress, iterable=batches, desc="writing 𝒥",
                                     unit="batch") or batches
    n, kd = write_rows((numpy_rows(b) for b in it), path, dtype=dt)
    logger.info("wrote 𝒥 of shape (%d, %d) %s to %s", n, kd, dt, path)
    return path, (n, kd)


def open_jacobian_memmap(path: str | os.PathLike) -> np.memmap:
    """Open a file written by :func:`write_jacobian_memmap` as a read-only memmap (n, kd)."""
    arr = np.load(Path(path), mmap_mode="r")
    if arr.ndim != 2:
        raise ValueError(f"{str(path)!r} does not hold a 2-D Jacobian array.")
    return arr
