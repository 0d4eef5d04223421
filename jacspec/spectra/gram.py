"""The data Jacobian's Gram matrix, accumulated without holding more than needed.

With ``𝒥`` the ``n x kd`` data Jacobian, the *primal* Gram is ``𝒥𝒥^T`` (``n x n``) and
the *dual* Gram is ``𝒥^T𝒥 = sum_i J_i^T J_i`` (``kd x kd``). Both have the same nonzero
eigenvalues; jacspec builds the smaller one. The dual side is a sum over examples, so it
streams batch by batch and never holds ``𝒥``. Matrices are returned in float64 and are
*unscaled* (``scale`` is applied in :mod:`jacspec.spectra.exact`).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from jacspec._util.memory import GIB, available_bytes, format_bytes, memory_limit  # noqa: F401
from jacspec._util.validation import check_choice
from jacspec.jacobian.engine import JacobianBatch
from jacspec.jacobian.options import JacobianOptions, resolve_options
from jacspec.jacobian.source import JacobianSource, class_sum_complement

logger = logging.getLogger(__name__)

SIDES = ("auto", "dual", "primal")
#: Rows multiplied at once into the dual Gram (flushes to the float64 accumulator).
DUAL_CHUNK_ROWS = 4096


@dataclass(frozen=True)
class Gram:
    """An unscaled Gram matrix of the data Jacobian and how it was made.

    ``matrix`` is float64, ``(n, n)`` for ``side="primal"`` (``𝒥𝒥^T``) or ``(kd, kd)`` for
    ``side="dual"`` (``𝒥^T𝒥``).
    """

    matrix: np.ndarray
    side: str
    n: int
    k: int
    input_shape: tuple[int, ...]
    output: str
    dtype: str
    deflated: bool = False
    settings: dict[str, Any] = field(default_factory=dict)
    #: ``sum_i ||sum_c J_i,c||^2`` of deflated softmax rows (0 without rounding: the measured
    #: Jacobian error of the rank rule, :func:`jacspec.spectra.exact.esd_from_gram`).
    class_sum_residual2: float | None = None

    @property
    def d(self) -> int:
        """Input dimension (all input axes flattened)."""
        return int(np.prod(self.input_shape))

    @property
    def num_known_zeros(self) -> int:
        """Exact zeros to append to a deflated dual Gram's eigenvalues.

        The deflated dual has ``(k-1)d`` eigenvalues; the ESD reports ``min(n, kd)`` of them
        whichever side was built, so ``min(n, kd) - (k-1)d`` (at most ``d``) zeros are added.
        A dual built from factored rows (``route="factored"``, ``(k-1)w`` or ``kw`` wide for
        ``d``-entry inputs) gets ``min(n, kd)`` minus its dimension.
        """
        if self.side != "dual":
            return 0
        return max(min(self.n, self.k * self.d) - int(self.matrix.shape[0]), 0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of the shape and how the Gram was made (``settings`` spread in);
        the matrix itself is left out (it is :attr:`matrix`)."""
        from jacspec._util.json import jsonable

        return jsonable({
            "side": self.side,
            "n": self.n,
            "k": self.k,
            "d": self.d,
            "input_shape": list(self.input_shape),
            "output": self.output,
            "dtype": self.dtype,
            "deflated": self.deflated,
            **self.settings,
        })

    def summary(self) -> dict[str, Any]:
        """Headline numbers: the side and its size, ``n``, ``k``, ``d`` and the trace
        ``tr(𝒥𝒥^T) = tr(𝒥^T𝒥) = ||𝒥||_F^2`` (unscaled; the same on both sides)."""
        from jacspec._util.json import jsonable

        return jsonable({
            "side": self.side,
            "size": int(self.matrix.shape[0]),
            "n": self.n,
            "k": self.k,
            "d": self.d,
            "deflated": self.deflated,
            "trace": float(self.matrix.trace()),  # numpy or a device tensor
            "class_sum_residual2": self.class_sum_residual2,
        })

    def to_frame(self) -> Any:
        """One-row pandas DataFrame of :meth:`summary`."""
        import pandas as pd

        return pd.DataFrame([self.summary()])


def gram_bytes(side: str, n: int, kd: int, itemsize: int = 4) -> int:
    """Peak bytes to build and diagonalise one side: float64 matrix, eigen work space, inputs.

    Dual: ``kd^2`` (float64 accumulator) + ``kd^2`` (eigensolver copy) + ``kd^2 * itemsize``
    (one chunk product). Primal: ``n*kd*itemsize`` (held 𝒥) + ``2 n^2`` float64.
    """
    if side == "dual":
        return int(kd * kd * (16 + itemsize))
    return int(n * kd * itemsize + 16 * n * n)


def check_fits(
    side: str,
    n: int,
    kd: int,
    itemsize: int,
    max_memory: int | None,
    *,
    estimate: str = "jacspec.estimate_esd(..., method='slq')",
) -> None:
    """Refuse with a sentence naming a smaller alternative if ``side`` would not fit in memory.

    ``estimate``: the call suggested for an estimate instead.
    """
    need = gram_bytes(side, n, kd, itemsize)
    limit = memory_limit(max_memory)
    if need <= limit:
        return
    if side == "primal" and primal_storage(n, kd, itemsize, max_memory) == "file":
        return
    other = "primal" if side == "dual" else "dual"
    other_need = gram_bytes(other, n, kd, itemsize)
    hints = []
    if side == "primal":
        # largest n with n*kd*itemsize + 16 n^2 <= limit
        a, b, c = 16.0, kd * itemsize, -float(limit)
        n_fit = int((-b + np.sqrt(b * b - 4 * a * c)) / (2 * a))
        hints.append(f"a subset of at most {max(n_fit, 0)} examples")
    if other_need <= limit:
        hints.append(f"side='{other}' ({format_bytes(other_need)})")
    else:
        hints.append("smaller inputs (for example a 24x24 crop)")
    hints.append(f"an estimate: {estimate}")
    disk = ""
    if side == "primal":
        disk = (f" (𝒥 alone {format_bytes(n * kd * itemsize)}, which may also be a float32 file "
                f"in {tempfile.gettempdir()}: {format_bytes(free_disk_bytes())} free, and "
                f"the n x n Gram {format_bytes(16 * n * n)} in memory)")
    raise ValueError(
        f"the {side} Gram for n={n}, kd={kd} needs about {format_bytes(need)}{disk} but only "
        f"{format_bytes(limit)} may be used (max_memory); use " + ", or ".join(hints)
    )


def free_disk_bytes(folder: str | None = None) -> int:
    """Free bytes in ``folder`` (default: the temporary directory, where 𝒥 is kept as a
    file when it does not fit in memory)."""
    return int(shutil.disk_usage(folder or tempfile.gettempdir()).free)


#: Share of the free disk space 𝒥's file may take.
DISK_SHARE = 0.9


def primal_storage(n: int, kd: int, itemsize: int, max_memory: int | None) -> str:
    """Where the primal route keeps 𝒥 (``n x kd``): ``"memory"`` when 𝒥 and the ``n x n``
    float64 Gram (x2, with the eigensolver's copy) fit the memory budget; ``"file"`` (a
    ``.npy`` memmap in the temporary directory, read back block by block) when only the
    Gram fits and 𝒥 fits :data:`DISK_SHARE` of the free disk; ``"none"`` otherwise."""
    limit = memory_limit(max_memory)
    held, square = n * kd * itemsize, 16 * n * n
    if held + square <= limit:
        return "memory"
    rows = primal_block_rows(n, kd, itemsize)
    blocks = 2 * rows * kd * 8 + rows * rows * 8  # primal_from_rows' two blocks, one product
    if square + blocks <= limit and held <= DISK_SHARE * free_disk_bytes():
        return "file"
    return "none"


def deflate_rows(jac: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Softmax Jacobian rows in the class-sum-zero basis: ``(b, k, ...) -> (b, (k-1)*d)``.

    Softmax rows satisfy ``sum_c J[c] = 0``, so ``J = Q Q^T J`` and the Gram of ``Q^T J``
    has the same nonzero eigenvalues; the dual side shrinks from ``kd`` to ``(k-1)d``.
    """
    b, k = jac.shape[:2]
    flat = jac.reshape(b, k, -1)
    return torch.einsum("bkd,kj->bjd", flat, q.to(dtype=jac.dtype, device=jac.device)).reshape(
        b, -1
    )


def gram_cols(k: int, d: int, output: str = "softmax", deflate: bool = True) -> int:
    """Columns of the rows a Gram is built from: ``(k-1)d`` for deflated softmax rows, else ``kd``.

    Softmax rows sum to zero over the ``k`` classes, so in the class-sum-zero basis
    (:func:`deflate_rows`) they have ``(k-1)d`` coordinates; this is the dual Gram's dimension.
    """
    return (k - 1) * d if (deflate and output == "softmax" and k > 1) else k * d


def gram_side(side: str, n: int | None, cols: int) -> str:
    """The Gram side jacspec builds (the one rule used by every entry point).

    ``side="dual"``/``"primal"`` are kept; ``"auto"`` gives ``"dual"`` (``cols x cols``,
    streamed, never holding 𝒥) when ``cols <= n`` and ``"primal"`` (``n x n``) otherwise, with
    ``cols`` from :func:`gram_cols` (``(k-1)d`` for deflated softmax rows). Ties go to the dual
    side, which needs the same memory without holding 𝒥. ``"auto"`` while ``n`` is unknown.
    """
    check_choice("side", side, SIDES)
    if side != "auto":
        return side
    if n is None:
        return "auto"
    return "dual" if cols <= n else "primal"


#: Column block of the triangular update on an accelerator (blocks on and above the diagonal).
TRIANGLE_BLOCK = 768


def symmetrize_upper(upper: Any, block: int = 256) -> Any:
    """Fill the strict lower triangle of ``upper`` (n x n, float64: a numpy array or a torch
    tensor on its device) from its upper one, in place and block by block (no n x n
    temporary); returns the same array."""
    n = upper.shape[0]
    triu = torch.triu if isinstance(upper, torch.Tensor) else np.triu
    for i in range(0, n, block):
        upper[i : i + block, :i] = upper[:i, i : i + block].T
        blk = upper[i : i + block, i : i + block]
        blk[...] = triu(blk) + triu(blk, 1).T
    return upper


class _DualAccumulator:
    """Accumulates ``sum_i J_i^T J_i`` in float64 from chunks cast to float64, one triangle.

    Each flush is the symmetric rank-m update ``C += X^T X`` of the upper triangle only (half
    the products of a full ``addmm``): BLAS ``dsyrk`` on the CPU, blocked ``addmm`` of the
    column blocks on and above the diagonal elsewhere; :meth:`result` mirrors it once.
    """

    def __init__(self, kd: int, dtype: torch.dtype, device: torch.device,
                 blas: bool | None = None) -> None:
        self.kd = kd
        self.device = torch.device(device)
        # blas: dsyrk on the host (default for CPU rows); False: the blocked torch update
        self.blas = self.device.type == "cpu" if blas is None else bool(blas)
        if self.blas:
            # Fortran order: dsyrk updates it in place (overwrite_c) without a copy
            self.acc: Any = np.zeros((kd, kd), dtype=np.float64, order="F")
        else:
            self.acc = torch.zeros(kd, kd, dtype=torch.float64, device=self.device)
        self.dtype = dtype
        self.pending: list[torch.Tensor] = []
        self.pending_rows = 0

    def add(self, rows: torch.Tensor) -> None:
        self.pending.append(rows)
        self.pending_rows += rows.shape[0]
        if self.pending_rows >= DUAL_CHUNK_ROWS:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        chunk = torch.cat(self.pending, dim=0) if len(self.pending) > 1 else self.pending[0]
        self.pending, self.pending_rows = [], 0
        # float32 entries multiply exactly in float64: the Gram adds no float32 rounding, so
        # its eigenvalues carry only the Jacobian's own error (jacspec.spectra.exact's rank rule)
        chunk = chunk.detach().to(torch.float64)
        if self.blas:
            from scipy.linalg import blas

            # chunk (m, kd) row-major is chunk^T (kd, m) column-major: C += (X^T)(X^T)^T
            x_t = chunk.contiguous().numpy().T
            self.acc = blas.dsyrk(1.0, x_t, beta=1.0, c=self.acc, trans=0, lower=0,
                                  overwrite_c=1)
            return
        b = TRIANGLE_BLOCK
        for i in range(0, self.kd, b):
            self.acc[i : i + b, i:].addmm_(chunk[:, i : i + b].T, chunk[:, i:])

    def result(self) -> Any:
        """The symmetric ``kd x kd`` float64 Gram: numpy for rows on the CPU, else a tensor
        on their device (the eigenvalues are computed there: no host round trip)."""
        self.flush()
        if not self.blas:
            if self.device.type != "cpu":
                return symmetrize_upper(self.acc)
            return symmetrize_upper(self.acc.cpu().numpy())
        # a symmetric Fortran-order matrix is its own C-order transpose (a view, no copy)
        return np.ascontiguousarray(symmetrize_upper(self.acc).T)


def primal_block_rows(n: int, kd: int, itemsize: int, block: int = 4096) -> int:
    """Rows per block of :func:`primal_from_rows`: ``block``, and for float32 rows at most
    ``2^25 / kd`` (each float64 operand ~256 MiB), at most ``n``."""
    if itemsize < 8:
        block = min(block, (1 << 25) // max(kd, 1))
    return max(1, min(block, n))


def rows_file(n: int, kd: int, dtype: torch.dtype) -> torch.Tensor:
    """An ``(n, kd)`` tensor of ``dtype`` backed by a ``.npy`` memmap in the temporary
    directory (𝒥's rows when they do not fit in memory). The file is unlinked as soon as it
    is mapped, so its disk space returns when the tensor is dropped, whatever ends the
    computation."""
    fd, path = tempfile.mkstemp(prefix="jacspec-rows-", suffix=".npy")
    os.close(fd)
    np_dtype = np.float32 if dtype == torch.float32 else np.float64
    try:
        array = np.lib.format.open_memmap(path, mode="w+", dtype=np_dtype, shape=(n, kd))
    finally:
        os.unlink(path)
    logger.info("gram: 𝒥 (%d x %d) kept in a file of the temporary directory", n, kd)
    return torch.from_numpy(array)


def primal_from_rows(rows: torch.Tensor, block: int = 4096, *,
                     on_device: bool | None = None) -> Any:
    """``𝒥𝒥^T`` in float64 from rows ``(n, kd)``: only the blocks on and above the diagonal
    are multiplied (half the products), each block cast to float64 once per row block (exact
    products of float32 entries; blocks shrink to ~256 MiB per operand); the lower triangle
    is their mirror. A numpy array, or with ``on_device`` (default: rows off the CPU) a
    float64 tensor on the rows' device, every product kept there (no host round trip)."""
    n = rows.shape[0]
    block = primal_block_rows(n, int(rows.shape[1]), rows.element_size(), block)
    keep = rows.device.type != "cpu" if on_device is None else bool(on_device)
    out: Any = (torch.empty(n, n, dtype=torch.float64, device=rows.device) if keep
                else np.empty((n, n), dtype=np.float64))
    for i in range(0, n, block):
        a = rows[i : i + block].to(torch.float64)
        for j in range(i, n, block):
            b = a if j == i else rows[j : j + block].to(torch.float64)
            blk = a @ b.T if keep else (a @ b.T).cpu().numpy()
            out[i : i + block, j : j + block] = blk
            if j != i:
                out[j : j + block, i : i + block] = blk.T
    return out


class _GramSink:
    """Takes the rows of one pass and forms their Gram on the side :func:`gram_side` picks:
    the dual ``kd x kd`` sum accumulated as rows come, or the primal ``n x n`` from 𝒥 held
    once (filled in place when ``n`` is known; ``side="auto"`` with ``n`` unknown holds rows
    until their count exceeds ``kd``, then turns dual). Memory is checked before it is used
    (:func:`check_fits`)."""

    def __init__(self, side: str, n: int | None, max_memory: int | None) -> None:
        self.side, self.n, self.max_memory = side, n, max_memory
        self.chosen = side
        self.held: list[torch.Tensor] = []
        self.buffer: torch.Tensor | None = None
        self.dual: _DualAccumulator | None = None
        self.count = 0
        self.kd = 0

    def _start(self, rows: torch.Tensor) -> None:
        """Pick the side from the first rows' width and allocate what it needs."""
        self.kd = kd = int(rows.shape[1])
        n, max_memory = self.n, self.max_memory
        self.chosen = gram_side(self.side, n, kd)
        if self.chosen != "auto":
            check_fits(self.chosen, n or kd, kd, rows.element_size(), max_memory)
        if self.chosen == "dual":
            self.dual = _DualAccumulator(kd, rows.dtype, rows.device)
        elif self.chosen == "primal" and n is not None:
            # 𝒥 held once: filled in place, never concatenated from a list (no doubling)
            where = primal_storage(n, kd, rows.element_size(), max_memory)
            if where == "file" and rows.device.type == "cpu":
                self.buffer = rows_file(n, kd, rows.dtype)
            else:
                self.buffer = torch.empty(n, kd, dtype=rows.dtype, device=rows.device)

    def _to_dual(self, count: int, like: torch.Tensor) -> None:
        """Turn dual: the rows held so far go into a dual accumulator."""
        check_fits("dual", count, self.kd, like.element_size(), self.max_memory)
        self.dual = _DualAccumulator(self.kd, like.dtype, like.device)
        for r in self.held:
            self.dual.add(r)
        self.held = []

    def add(self, rows: torch.Tensor) -> None:
        """One batch of rows ``(b, kd)``."""
        if self.count == 0:
            self._start(rows)
        self.count += rows.shape[0]
        count, buffer = self.count, self.buffer
        if self.dual is not None:
            self.dual.add(rows)
            return
        if buffer is not None and count <= buffer.shape[0]:
            buffer[count - rows.shape[0] : count] = rows
            return
        if buffer is not None:  # more rows than the source said: hold them as they come
            self.held, self.buffer = [buffer[: count - rows.shape[0]]], None
        self.held.append(rows)
        if self.chosen == "primal" and self.n is None:
            check_fits("primal", count, self.kd, rows.element_size(), self.max_memory)
        if self.chosen == "auto" and count > self.kd:  # gram_side's rule, once n exceeds kd
            self.chosen = "dual"
            self._to_dual(count, rows)

    def result(self) -> tuple[Any, str]:
        """The Gram matrix and its side; ValueError when no row came."""
        if self.count == 0:
            raise ValueError("data is empty; expected at least one example")
        auto_dual = self.chosen == "auto" and gram_side("auto", self.count, self.kd) == "dual"
        if self.dual is None and auto_dual:
            self._to_dual(self.count, self.held[0])
        if self.dual is not None:
            return self.dual.result(), "dual"
        if self.buffer is not None:
            return primal_from_rows(self.buffer[: self.count]), "primal"
        return primal_from_rows(torch.cat(self.held, dim=0)), "primal"


def _gram_from_iter(
    batches: Iterable[JacobianBatch],
    *,
    side: str,
    n: int | None,
    max_memory: int | None,
    output: str,
    deflate: bool,
    sum_to_zero: bool,
    dtype: torch.dtype | None = None,
) -> Gram:
    """The Gram of one pass of ``batches`` (``deflate``: rows in the class-sum-zero basis;
    ``dtype``: the dtype the rows were computed in, default theirs). Rows that sum to zero
    over classes (``sum_to_zero``) also give ``class_sum_residual2 = sum_i ||sum_c
    J_i,c||^2`` (0 without rounding)."""
    check_choice("side", side, SIDES)
    sink = _GramSink(side, n, max_memory)
    k = 0
    shape: tuple[int, ...] = ()
    row_dtype = torch.float32
    residual = 0.0
    q: torch.Tensor | None = None
    for batch in batches:
        if deflate:
            if q is None:
                q = class_sum_complement(int(batch.jac.shape[1]))
            rows = deflate_rows(batch.jac, q)
        else:
            rows = batch.rows
        if sum_to_zero:
            residual += float(batch.jac.detach().to(torch.float64).sum(dim=1).square().sum())
        if sink.count == 0:
            k, shape = int(batch.jac.shape[1]), tuple(int(s) for s in batch.jac.shape[2:])
            row_dtype = rows.dtype
        sink.add(rows)
    matrix, final_side = sink.result()
    logger.info("gram: side=%s n=%d dim=%d deflated=%s", final_side, sink.count, sink.kd,
                deflate)
    return Gram(
        matrix=matrix,
        side=final_side,
        n=sink.count,
        k=k,
        input_shape=shape,
        output=output,
        dtype=str(dtype or row_dtype).replace("torch.", ""),
        deflated=deflate,
        class_sum_residual2=residual if sum_to_zero else None,
    )


def gram_from_source(
    source: JacobianSource,
    *,
    side: str = "auto",
    max_memory: int | None = None,
    deflate: bool = True,
) -> Gram:
    """The unscaled Gram of the rows of ``source`` (one pass; see :func:`gram` for ``side``).

    ``deflate``: when the source's rows sum to zero over classes (softmax), build it in the
    class-sum-zero basis (:func:`deflate_rows`). With ``side="auto"`` and ``n`` unknown,
    rows are held until there are more than ``cols`` of them, then folded into the dual
    accumulator (so memory never exceeds the dual's). ``dtype`` is the source's (the
    precision the rows were computed in, even for a float64 cache).
    """
    if not isinstance(source, JacobianSource):
        raise TypeError(f"source must be a JacobianSource; got {type(source).__name__}")
    check_choice("side", side, SIDES)
    if source.n is not None:  # refused before any Jacobian is computed
        cols = gram_cols(source.k, source.d, "softmax" if source.rows_sum_to_zero else "logits",
                         bool(deflate) and source.rows_sum_to_zero)
        itemsize = torch.empty((), dtype=source.dtype).element_size()
        check_fits(gram_side(side, source.n, cols), source.n, cols, itemsize, max_memory)
    g = _gram_from_iter(
        source, side=side, n=source.n, max_memory=max_memory, output=source.output,
        deflate=bool(deflate) and source.rows_sum_to_zero, sum_to_zero=source.rows_sum_to_zero,
        dtype=source.dtype,
    )
    # factored rows (route="factored"): the Gram is 𝒥's, so is its input shape
    return replace(g, input_shape=source.jacobian_shape,
                   settings={**g.settings, "source": source.settings, "route": source.route})


def sum_grams(parts: Iterable[Gram]) -> Gram:
    """The dual Gram of the union of disjoint shards of examples: ``sum_s G_s``.

    The dual ``𝒥^T𝒥 = sum_i J_i^T J_i`` is a sum over examples, so partial duals of shards
    (each from :func:`gram_from_source` with ``side="dual"``) add up to the whole data's.
    Summed in the order given (a fixed order gives a deterministic result) into a copy of the
    first matrix; ``n`` and ``class_sum_residual2`` add up too. Every part must be a dual
    Gram of the same ``k``, ``input_shape``, ``output``, ``dtype``, deflation and ``route``
    (settings; the only setting kept) (ValueError). The primal side ``𝒥𝒥^T`` is not a sum
    over examples and is refused.
    """
    acc: np.ndarray | None = None
    first: Gram | None = None
    n = 0
    residual: float | None = None
    for i, g in enumerate(parts):
        if not isinstance(g, Gram):
            raise TypeError(f"parts[{i}] must be a Gram; got {type(g).__name__}")
        if g.side != "dual":
            raise ValueError(
                f"parts[{i}] is a {g.side} Gram; only dual Grams (sums over examples) add up"
            )
        if first is None:
            first, acc = g, np.array(g.matrix, dtype=np.float64, copy=True)
            residual = g.class_sum_residual2
        else:
            key = ("k", "input_shape", "output", "dtype", "deflated")
            if any(getattr(g, a) != getattr(first, a) for a in key) or \
                    g.matrix.shape != first.matrix.shape or \
                    g.settings.get("route") != first.settings.get("route"):
                raise ValueError(
                    f"parts[{i}] ({', '.join(f'{a}={getattr(g, a)!r}' for a in key)}) does not "
                    "match parts[0]; shards must be Grams of the same model and output"
                )
            acc += g.matrix
            if residual is not None and g.class_sum_residual2 is not None:
                residual += g.class_sum_residual2
        n += g.n
    if first is None or acc is None:
        raise ValueError("parts is empty; expected at least one Gram")
    kept = {"route": first.settings["route"]} if "route" in first.settings else {}
    return replace(first, matrix=acc, n=n, settings=kept, class_sum_residual2=residual)


def gram_from_batches(
    batches: Iterable[JacobianBatch],
    *,
    side: str = "auto",
    n: int | None = None,
    max_memory: int | None = None,
    output: str = "softmax",
    deflate: bool = True,
) -> Gram:
    """Build the Gram of one pass of Jacobian ``batches`` (see :func:`gram_from_source`);
    ``n`` if known in advance; ``deflate`` applies to ``output="softmax"`` rows."""
    return _gram_from_iter(
        batches, side=side, n=n, max_memory=max_memory, output=output,
        deflate=bool(deflate) and output == "softmax", sum_to_zero=output == "softmax",
    )


def gram(
    model: nn.Module,
    data: Any,
    *,
    side: str = "auto",
    max_memory: int | None = None,
    deflate: bool = True,
    options: JacobianOptions | None = None,
    **fields: Any,
) -> Gram:
    """Exact Gram of the data Jacobian 𝒥 of ``model`` on ``data``.

    ``side="auto"`` follows :func:`gram_side`: the dual ``𝒥^T𝒥`` (cols x cols) when
    ``cols <= n`` and the primal ``𝒥𝒥^T`` (n x n) otherwise, ``cols = (k-1)d`` for softmax
    outputs (built in the class-sum-zero basis unless ``deflate=False``: same nonzero
    eigenvalues, ``d`` fewer dual dimensions) and ``kd`` otherwise. Refuses (ValueError)
    before allocating more than ``max_memory`` bytes (default: 80% of the available memory).
    ``options`` (:class:`~jacspec.jacobian.options.JacobianOptions`) or any of its fields as
    keywords (``output``, ``dtype``, ``device``, ``batch_size``, ``jacobian_method`` or
    ``method`` for the batched backward, ``check_independence``, ``progress``, ``route``,
    ``sketch``, ``sketch_kind``, ``sketch_seed``), resolved once
    (:func:`~jacspec.jacobian.options.resolve_options`) and passed whole to the rows'
    :class:`~jacspec.jacobian.source.JacobianSource`.
    """
    check_choice("side", side, SIDES)
    opts = resolve_options(options, **fields)
    source = JacobianSource.from_model(model, data, opts)
    g = gram_from_source(source, side=side, max_memory=max_memory, deflate=deflate)
    return replace(
        g, settings={**g.settings, "jacobian_method": opts.method, "jacobian": opts.to_dict()}
    )
