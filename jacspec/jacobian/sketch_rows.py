"""The sketch's rows: shared output projections ``V`` (``r x k``) and ``S_i = V J_i``.

``S_i`` is ``r`` vector-Jacobian products of one forward pass
(:func:`~jacspec.jacobian.engine.input_rows` with the cotangent rows of ``V``), never the
``k x d`` Jacobian; ``E[V^T V] = I_k`` (or ``P``, the projector onto the class-sum-zero
complement, for softmax rows) makes ``E[tr(S_i S_j^T)] = M_ij``. Why the projections are
shared, the kinds and the error bars: :mod:`jacspec.jacobian.sketch`, whose public names
include these. The sketched :class:`~jacspec.jacobian.source.JacobianSource` is made by
``JacobianSource.from_model`` (``sketch=r``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from jacspec.jacobian.engine import (
    JacobianBatch,
    input_rows,
    jacobian_loop,
    output_map,
    prepare_model,
    refuse_training_layers,
    resolve_method,
)
from jacspec.jacobian.options import AUTO_SKETCH_MIN_K, AUTO_SKETCH_R, SKETCH_KINDS, JacobianOptions
from jacspec.jacobian.vjp import with_fallback

logger = logging.getLogger(__name__)

__all__ = [
    "check_r",
    "class_sum_complement",
    "iter_sketched_jacobians",
    "resolve_sketch",
    "sketch_dim",
    "sketch_projections",
]


def class_sum_complement(k: int) -> torch.Tensor:
    """Orthonormal ``Q`` (k x k-1, float64) with ``Q^T 1 = 0``: a basis of the class vectors
    summing to zero, where softmax rows live (``rows_sum_to_zero``); the Gram's deflation
    and the sketch's projections both use it."""
    centred = torch.eye(k, dtype=torch.float64) - 1.0 / k
    q, _ = torch.linalg.qr(centred[:, : k - 1])
    return q


def sketch_dim(k: int, rows_sum_to_zero: bool) -> int:
    """``k'``: the dimension projections are drawn in (``k - 1`` for softmax rows, else ``k``)."""
    return k - 1 if rows_sum_to_zero and k > 1 else k


def check_r(r: Any, k: int, rows_sum_to_zero: bool, name: str = "sketch") -> int:
    """``r`` as an int in ``1..k'``, or one ValueError/TypeError sentence naming ``name``."""
    kk = sketch_dim(k, rows_sum_to_zero)
    if isinstance(r, bool) or not isinstance(r, (int, np.integer)):
        raise TypeError(f"{name} must be a positive integer number of output projections; "
                        f"got {r!r}")
    basis = (f"k-1 = {kk} (softmax rows are sketched in the class-sum-zero basis)"
             if kk < k else f"k = {kk}")
    if not 1 <= int(r) <= kk:
        raise ValueError(f"{name} must be between 1 and {basis}, where {kk} projections are "
                         f"already exact; got {r!r}")
    return int(r)


def resolve_sketch(sketch: Any, k: int, *, rows_sum_to_zero: bool) -> int | None:
    """The number of projections ``r`` for the option value ``sketch`` and ``k`` outputs.

    None or 0: no sketch. ``"auto"``: ``r = AUTO_SKETCH_R`` when ``k >= AUTO_SKETCH_MIN_K``
    (logged), else none. An int: that ``r`` (checked: ``1 <= r <= k'``).
    """
    if sketch is None or (not isinstance(sketch, bool) and sketch == 0):
        return None
    if sketch == "auto":
        if k < AUTO_SKETCH_MIN_K:
            return None
        r = min(AUTO_SKETCH_R, sketch_dim(k, rows_sum_to_zero))
        logger.warning("k=%d >= %d outputs: sketching them with r=%d random projections "
                       "(sketch='auto'; pass sketch=0 for the exact Jacobian)",
                       k, AUTO_SKETCH_MIN_K, r)
        return r
    return check_r(sketch, k, rows_sum_to_zero)


def sketch_projections(
    k: int,
    r: int,
    *,
    kind: str = "rademacher",
    seed: int = 0,
    rows_sum_to_zero: bool = False,
) -> torch.Tensor:
    """The cotangent matrix ``V = U / sqrt(r)`` (``r x k``, float64): sketched rows are
    ``S_i = V J_i`` and ``E[V^T V] = I_k`` (``P``, the projector onto the class-sum-zero
    complement, for ``rows_sum_to_zero``), so ``E[tr(S_i S_j^T)] = M_ij``."""
    if kind not in SKETCH_KINDS:
        raise ValueError(f"sketch_kind must be one of {', '.join(SKETCH_KINDS)}; got {kind!r}")
    r = check_r(r, k, rows_sum_to_zero)
    kk = sketch_dim(k, rows_sum_to_zero)
    gen = torch.Generator().manual_seed(int(seed))
    if kind == "rademacher":
        u = torch.randint(0, 2, (r, kk), generator=gen, dtype=torch.int64).to(torch.float64)
        u = 2.0 * u - 1.0
    else:
        g = torch.randn(kk, r, generator=gen, dtype=torch.float64)
        q, rr = torch.linalg.qr(g)
        q = q * torch.sign(torch.diagonal(rr)).where(torch.diagonal(rr) != 0, 1.0)  # Haar
        u = math.sqrt(kk) * q.T
    if kk < k:
        u = u @ class_sum_complement(k).T
    return u / math.sqrt(r)


def iter_sketched_jacobians(
    model: nn.Module, data: Any, v: torch.Tensor, *, options: JacobianOptions
) -> Iterator[JacobianBatch]:
    """Batches of sketched rows ``S_i = V J_i`` (``jac`` of shape ``(b, r, *input_shape)``):
    ``r`` vector-Jacobian products per example through the engine's loop (same checks,
    batch rule on ``r d`` entries, ``options.method`` for the backward)."""
    run_model, dt, dev = prepare_model(model, options.dtype, options.device)
    refuse_training_layers(run_model)
    chosen = resolve_method(run_model, options.method)
    fn = output_map(options.output)
    vd = v.to(dtype=dt, device=dev)
    r = int(v.shape[0])

    def rows_by(method: str) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        return lambda x: input_rows(run_model, fn, x, vd, method)

    sk = rows_by(chosen)
    if chosen == "batched_grad":
        sk = with_fallback(sk, rows_by("loop"), "sketched jacobians")

    def step(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        if k != v.shape[1]:
            raise ValueError(f"the model has {k} outputs but the sketch was drawn for "
                             f"{v.shape[1]}")
        return sk(x)

    logger.info("sketched jacobians: r=%d, method %s", r, chosen)
    return jacobian_loop(run_model, data, step, options=options, dtype=dt, device=dev,
                         entries=lambda k, d: r * d, desc="sketched jacobians")
