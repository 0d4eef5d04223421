"""The exact-vs-estimate plan: which method computes an ESD, where 𝒥 is stored, and why.

The exact path forms the smaller Gram side (dim = min(n, cols)) in float64 and diagonalises
it: O(dim^2) memory and O(dim^3) time. :func:`plan_esd` takes it when dim <=
``max_exact_dim`` and its bytes fit the memory limit, and otherwise plans a stochastic
Lanczos estimate with 𝒥 in memory, in a file, or recomputed per pass.
:func:`problem_shape` finds (n, k, d) without computing Jacobians.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from jacspec._util.json import jsonable
from jacspec._util.memory import memory_limit
from jacspec.spectra.gram import gram_bytes, gram_side

__all__ = ["MAX_EXACT_DIM", "EsdPlan", "engine_dtype", "plan_esd", "problem_shape"]

METHODS = ("auto", "exact", "slq")
STORAGES = ("auto", "memory", "file", "stream")
#: Largest Gram side diagonalised exactly by default (syevd at 12,000 takes minutes on 2 cores).
MAX_EXACT_DIM = 12_000
GIB = 2**30


@dataclass(frozen=True)
class EsdPlan:
    """Which method and storage :func:`jacspec.spectra.estimate.estimate_esd` uses, the byte
    counts, and why."""

    method: str
    side: str
    dim: int
    storage: str | None
    exact_bytes: int
    jacobian_bytes: int
    memory_limit: int
    reason: str
    #: The inputs of the decision (problem size, requested method/side/storage, limits).
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return jsonable(asdict(self))

    def summary(self) -> dict[str, Any]:
        """The decision: method, side, dim, storage and why."""
        return jsonable({"method": self.method, "side": self.side, "dim": self.dim,
                         "storage": self.storage, "reason": self.reason})

    def to_frame(self) -> Any:
        """One row: every field."""
        import pandas as pd

        return pd.DataFrame([self.to_dict()])


def plan_esd(
    n: int,
    kd: int,
    *,
    itemsize: int = 4,
    method: str = "auto",
    side: str = "auto",
    storage: str = "auto",
    max_exact_dim: int = MAX_EXACT_DIM,
    max_memory: int | None = None,
    workdir: str | os.PathLike | None = None,
    cols: int | None = None,
) -> EsdPlan:
    """Pick exact vs SLQ and, for SLQ, where 𝒥 lives.

    ``cols``: columns of the rows the exact Gram is built from, ``(k-1)d`` for deflated
    softmax rows (:func:`jacspec.spectra.gram.gram_cols`; default ``kd``). The side follows
    :func:`jacspec.spectra.gram.gram_side` (dual when cols <= n). Exact when dim = (cols if
    dual else n) <= ``max_exact_dim`` and the exact path's bytes
    (:func:`jacspec.spectra.gram.gram_bytes` with ``cols``) fit ``max_memory`` (default 80%
    of available memory). SLQ storage (``"auto"``):
    𝒥 (n x kd) in memory if n*kd*itemsize takes at most half of ``max_memory``, else an
    ``.npy`` file in ``workdir`` if the disk has room, else recomputed on every pass.
    """
    for name, val, allowed in (
        ("method", method, METHODS),
        ("side", side, ("auto", "dual", "primal")),
        ("storage", storage, STORAGES),
    ):
        if val not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {val!r}.")
    if n < 1 or kd < 1:
        raise ValueError(f"n and kd must be positive, got n={n}, kd={kd}.")
    requested = (method, side, storage)
    cols = kd if cols is None else int(cols)
    if not 1 <= cols <= kd:
        raise ValueError(f"cols must be in [1, kd={kd}], got {cols}.")
    side = gram_side(side, n, cols)
    dim = cols if side == "dual" else n
    limit = memory_limit(max_memory)
    exact_bytes = gram_bytes(side, n, cols, itemsize)
    jac_bytes = int(n) * int(kd) * int(itemsize)
    if method == "auto":
        if dim > max_exact_dim:
            method, reason = "slq", f"dim={dim} > max_exact_dim={max_exact_dim}"
        elif exact_bytes > limit:
            method = "slq"
            reason = f"exact needs {exact_bytes / GIB:.2f} GiB > limit {limit / GIB:.2f} GiB"
        else:
            method = "exact"
            reason = f"dim={dim} <= {max_exact_dim} and {exact_bytes / GIB:.2f} GiB fits"
    else:
        reason = f"method={method!r} requested"
    store: str | None = None
    if method == "slq":
        store = storage
        if storage == "auto":
            disk = shutil.disk_usage(workdir or tempfile.gettempdir()).free
            if jac_bytes <= limit // 2:
                store = "memory"
            elif jac_bytes <= 0.8 * disk:
                store = "file"
            else:
                store = "stream"
            reason += f"; 𝒥 ({jac_bytes / GIB:.2f} GiB) stored: {store}"
    settings = {"n": int(n), "kd": int(kd), "cols": cols, "itemsize": int(itemsize),
                "requested_method": requested[0], "requested_side": requested[1],
                "requested_storage": requested[2], "max_exact_dim": int(max_exact_dim),
                "max_memory": max_memory}
    return EsdPlan(method, side, dim, store, exact_bytes, jac_bytes, limit, reason, settings)


def engine_dtype(model: nn.Module, dtype: torch.dtype | None) -> torch.dtype:
    """The dtype the Jacobian engine runs in: ``dtype``, else the model's, else float32."""
    from jacspec.jacobian.engine import model_dtype_device

    return dtype or model_dtype_device(model)[0] or torch.float32


def problem_shape(model: nn.Module, data: Any, dtype: torch.dtype | None) -> tuple[int, int, int]:
    """(n, k, d) without computing Jacobians: n from the data, k from one forward pass.

    The model runs as given (its mode untouched) on two examples in its own dtype; buffers
    and the random state are restored afterwards (:func:`jacspec.jacobian.model_prep.untouched`).
    """
    from jacspec.data.batches import data_length, first_batch, iter_batches
    from jacspec.jacobian.engine import (
        check_inputs,
        model_dtype_device,
        output_map,
        run_forward,
        unwrap_compiled,
    )
    from jacspec.jacobian.model_prep import untouched

    model = unwrap_compiled(model)
    x, _ = first_batch(data)
    check_inputs(x)
    d = int(x[0].numel())
    mdt, mdev = model_dtype_device(model)
    dt = mdt or dtype or torch.float32  # probe in the model's dtype
    dev = mdev or torch.device("cpu")
    with untouched(model, no_grad=True):
        k = int(run_forward(model, output_map("logits"), x[:2].to(device=dev, dtype=dt)).shape[1])
    n = data_length(data)
    if n is None:
        n = sum(int(xb.shape[0]) for xb, _ in iter_batches(data))
    return int(n), k, d
