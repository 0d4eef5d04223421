"""ESD of the data Jacobian, exact when it fits, estimated (SLQ) when it does not.

:func:`estimate_esd` decides per problem (:func:`plan_esd`): the exact path
(:func:`jacspec.spectra.exact.esd`) forms the smaller Gram side (dim = min(n, kd)) in float64 and
diagonalises it, O(dim^2) memory and O(dim^3) time; the estimate path applies that side as a
matrix-free operator (:mod:`jacspec.spectra.operators`) and runs stochastic Lanczos quadrature,
block Lanczos for the top eigenvalues and the exact trace ||𝒥||_F^2 / c
(:mod:`jacspec.spectra.krylov`).
Both return an :class:`ESDEstimate` with the same fields, recording which method ran and why.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from jacspec.spectra.gram import available_bytes, gram_bytes, gram_cols, gram_side
from jacspec.spectra.krylov import (
    SpectralDensity,
    _jsonable,
    discrete_cdf,
    slq,
    spectral_density,
    top_eigenvalues,
)
from jacspec.spectra.operators import (
    ArrayRows,
    FileRows,
    GramOperator,
    StreamRows,
    softmax_null_projector,
    write_jacobian_memmap,
)

logger = logging.getLogger(__name__)

__all__ = [
    "ESDEstimate",
    "EsdPlan",
    "estimate_esd",
    "estimate_from_operator",
    "plan_esd",
]

METHODS = ("auto", "exact", "slq")
STORAGES = ("auto", "memory", "file", "stream")
#: Largest Gram side diagonalised exactly by default (syevd at 12,000 takes minutes on 2 cores).
MAX_EXACT_DIM = 12_000
GIB = 2**30


@dataclass(frozen=True)
class EsdPlan:
    """Which method and storage :func:`estimate_esd` uses, the byte counts, and why."""

    method: str
    side: str
    dim: int
    storage: str | None
    exact_bytes: int
    jacobian_bytes: int
    memory_limit: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    softmax rows (:func:`jacspec.spectra.gram.gram_cols`; default ``kd``). The side
    follows
    :func:`jacspec.spectra.gram.gram_side` (dual when cols <= n). Exact when dim = (cols if
    dual else
    n) <= ``max_exact_dim`` and the exact path's bytes (:func:`jacspec.spectra.gram.gram_bytes` with
    ``cols``) fit ``max_memory`` (default 80% of available memory). SLQ storage (``"auto"``):
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
    cols = kd if cols is None else int(cols)
    if not 1 <= cols <= kd:
        raise ValueError(f"cols must be in [1, kd={kd}], got {cols}.")
    side = gram_side(side, n, cols)
    dim = cols if side == "dual" else n
    limit = int(max_memory) if max_memory is not None else int(0.8 * available_bytes())
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
    return EsdPlan(method, side, dim, store, exact_bytes, jac_bytes, limit, reason)


@dataclass(frozen=True)
class ESDEstimate:
    """Spectral density of M/c (c = n or 1) on one Gram side, exact or
    estimated.

    ``grid``/``density``: Gaussian-broadened density (see
    :func:`jacspec.spectra.krylov.spectral_density`);
    ``nodes``/``weights``: the discrete measure behind it (exact: all eigenvalues, weight
    1/dim; SLQ: Ritz values and Gauss weights averaged over start vectors); ``trace``: exact
    tr = ||𝒥||_F^2/c when known (else the SLQ/Hutchinson estimate); ``trace_estimate`` and
    ``trace_stderr`` the stochastic one; ``top_eigenvalues`` descending; ``zero_mass`` the
    weight at 0 (nodes <= zero_tol * lambda_max). ``params`` records every setting; for SLQ
    ``params["resolution"]`` = λ_max π²/(16 m²), the Gauss-node spacing next to 0 with m
    steps: the estimate lumps together eigenvalues below that scale.
    """

    grid: np.ndarray
    density: np.ndarray
    nodes: np.ndarray
    weights: np.ndarray
    trace: float
    trace_estimate: float
    trace_stderr: float
    top_eigenvalues: np.ndarray
    top_residuals: np.ndarray
    lambda_max: float
    zero_mass: float
    method: str
    side: str
    dim: int
    n: int
    kd: int
    scale: str
    output: str | None
    storage: str | None
    seconds: float
    reason: str
    params: dict[str, Any] = field(default_factory=dict)

    def cdf(self, x: np.ndarray | float) -> np.ndarray:
        """CDF of the discrete measure (nodes, weights) at x."""
        return discrete_cdf(self.nodes, self.weights, x)

    def summary(self) -> dict[str, Any]:
        """Scalars only (no arrays)."""
        keys = ("trace", "trace_estimate", "trace_stderr", "lambda_max", "zero_mass", "method",
                "side", "dim", "n", "kd", "scale", "output", "storage", "seconds", "reason")
        return _jsonable({k: getattr(self, k) for k in keys} | {"params": self.params})

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))

    def to_frame(self) -> Any:
        import pandas as pd

        return pd.DataFrame({"x": self.grid, "density": self.density})


def _density(
    nodes: np.ndarray, weights: np.ndarray | None, density_kw: dict[str, Any], method: str
) -> SpectralDensity:
    return spectral_density(nodes, weights, method=method, **density_kw)


def estimate_from_operator(
    op: GramOperator,
    *,
    num_steps: int = 80,
    num_vectors: int = 10,
    seed: int = 0,
    distribution: str = "rademacher",
    block_size: int | None = None,
    project: Callable[[np.ndarray], np.ndarray] | None = None,
    null_dim: int = 0,
    top_k: int = 10,
    top_steps: int = 0,
    exact_trace: bool = True,
    output: str | None = None,
    storage: str | None = None,
    reason: str = "",
    num_points: int = 512,
    sigma: float | None = None,
    rel_sigma: float = 0.01,
    log_scale: bool = False,
    zero_tol: float = 1e-6,
    progress: bool = False,
) -> ESDEstimate:
    """SLQ density, block-Lanczos top eigenvalues and the trace of a Gram operator.

    Cost in passes over 𝒥 (dual side; double for primal): ``num_steps`` for SLQ with
    ``num_vectors`` vectors per pass (``block_size`` at a time); the exact trace rides along.
    Top-k: ``top_steps=0`` (default) takes Ritz values on the SLQ block Krylov space
    K_m(A, [v_1..v_s]) for free; ``top_steps > 0`` runs a separate block Lanczos with
    ``top_k + 5`` vectors for that many passes. ``project``/``null_dim``:
    a known null space deflated from SLQ (see :func:`jacspec.spectra.krylov.slq`).
    """
    t0 = time.perf_counter()
    passes0 = op.num_passes
    q = slq(
        op,
        num_steps,
        num_vectors,
        seed=seed,
        distribution=distribution,
        block_size=block_size,
        project=project,
        null_dim=null_dim,
        top_k=min(top_k, op.shape[0]) if top_steps == 0 else 0,
        progress=progress,
    )
    if top_steps == 0:  # Rayleigh-Ritz on the SLQ block Krylov space, no extra passes
        assert q.top is not None
        top = q.top
    else:
        top = top_eigenvalues(
            op, min(top_k, op.shape[0]), num_steps=top_steps, seed=seed + 1, progress=progress
        )
    tr_exact = op.trace() if exact_trace else float("nan")
    nodes, w = q.flat()
    density_kw = dict(
        num_points=num_points, sigma=sigma, rel_sigma=rel_sigma, log_scale=log_scale,
        zero_tol=zero_tol,
    )
    dens = _density(nodes, w, density_kw, "slq")
    lam_max = max(float(top.values[0]), q.lambda_max)
    params = q.params() | {
        "top_k": top.k,
        "top_steps": top_steps,
        "top_block_size": top.block_size,
        "top_method": top.method,
        "exact_trace": exact_trace,
        "operator_passes": op.num_passes - passes0,
        "dtype": str(op.dtype),
        "sigma": dens.sigma,
        "log_scale": log_scale,
        "zero_tol": zero_tol,
        # smallest Gauss node spacing near 0 on [0, λ_max]: finer structure is not resolved
        "resolution": lam_max * math.pi**2 / (16 * q.num_steps**2),
    }
    return ESDEstimate(
        grid=dens.grid,
        density=dens.density,
        nodes=nodes,
        weights=w,
        trace=tr_exact if exact_trace else q.trace,
        trace_estimate=q.trace,
        trace_stderr=q.trace_stderr,
        top_eigenvalues=top.values,
        top_residuals=top.residuals,
        lambda_max=lam_max,
        zero_mass=dens.zero_mass,
        method="slq",
        side=op.side,
        dim=op.shape[0],
        n=op.n,
        kd=op.kd,
        scale=op.scale,
        output=output,
        storage=storage,
        seconds=time.perf_counter() - t0,
        reason=reason,
        params=params,
    )


def engine_dtype(model: nn.Module, dtype: torch.dtype | None) -> torch.dtype:
    """The dtype the Jacobian engine runs in: ``dtype``, else the model's, else float32."""
    from jacspec.jacobian.engine import _model_dtype_device

    return dtype or _model_dtype_device(model)[0] or torch.float32


def problem_shape(model: nn.Module, data: Any, dtype: torch.dtype | None) -> tuple[int, int, int]:
    """(n, k, d) without computing Jacobians: n from the data, k from one forward pass.

    The model runs as given (its mode untouched) on two examples in its own dtype; buffers
    and the random state are restored afterwards (:func:`jacspec.jacobian.layers.untouched`).
    """
    from jacspec.data.batches import data_length, first_batch, iter_batches
    from jacspec.jacobian.engine import (
        _check_inputs,
        _forward,
        _model_dtype_device,
        output_map,
        unwrap_compiled,
    )
    from jacspec.jacobian.layers import untouched

    model = unwrap_compiled(model)
    x, _ = first_batch(data)
    _check_inputs(x)
    d = int(x[0].numel())
    mdt, mdev = _model_dtype_device(model)
    dt = mdt or dtype or torch.float32  # probe in the model's dtype
    dev = mdev or torch.device("cpu")
    with untouched(model):
        k = int(_forward(model, output_map("logits"), x[:2].to(device=dev, dtype=dt)).shape[1])
    n = data_length(data)
    if n is None:
        n = sum(int(xb.shape[0]) for xb, _ in iter_batches(data))
    return int(n), k, d


def estimate_from_batches(
    make_batches: Callable[[], Iterable[Any]],
    *,
    n: int,
    k: int,
    d: int,
    plan: EsdPlan,
    output: str | None = "softmax",
    scale: str = "n",
    dtype: torch.dtype = torch.float32,
    deflate: bool = True,
    num_steps: int = 80,
    num_vectors: int = 10,
    seed: int = 0,
    distribution: str = "rademacher",
    block_size: int | None = None,
    top_k: int = 10,
    top_steps: int = 0,
    workdir: str | os.PathLike | None = None,
    keep_file: bool = False,
    num_points: int = 512,
    sigma: float | None = None,
    rel_sigma: float = 0.01,
    log_scale: bool = False,
    zero_tol: float = 1e-6,
    progress: bool = False,
) -> ESDEstimate:
    """SLQ estimate of the Gram of the rows that ``make_batches()`` yields (a fresh pass each call).

    ``make_batches``: a factory of Jacobian batches (``JacobianBatch``, tensors or arrays of
    shape ``(b, k, *)`` or ``(b, kd)``), e.g. ``lambda: iter_jacobians(model, data)`` or
    ``lambda: iter_layer_jacobians(model, data, name)``; ``(n, k, d)`` its shape and ``plan``
    (:func:`plan_esd`, method ``"slq"``) the side and where the rows are stored.
    ``deflate`` (softmax output, dual side): the known ``d``-dim null space is projected out.
    """
    t0 = time.perf_counter()
    np_dtype = np.dtype(str(dtype).replace("torch.", ""))
    kd = k * d
    tmp: Path | None = None
    if plan.storage == "memory":
        J = np.empty((n, kd), dtype=np_dtype)
        s = 0
        for b in make_batches():
            r = _rows_of(b)
            J[s : s + r.shape[0]] = r
            s += r.shape[0]
        if s != n:
            raise ValueError(f"the Jacobian batches gave {s} rows, expected n={n}")
        rows: Any = ArrayRows(J)
    elif plan.storage == "file":
        folder = Path(workdir) if workdir is not None else Path(tempfile.gettempdir())
        fd, name = tempfile.mkstemp(prefix="jacspec_J_", suffix=".npy", dir=folder)
        os.close(fd)
        tmp = Path(name)
        write_jacobian_memmap(make_batches(), tmp, dtype=np_dtype)
        rows = FileRows(tmp)
    else:
        rows = StreamRows(
            lambda: (_rows_of(b) for b in make_batches()), shape=(n, kd), dtype=np_dtype
        )
    t_store = time.perf_counter() - t0
    try:
        op = GramOperator(rows, side=plan.side, scale=scale)
        use_null = deflate and output == "softmax" and plan.side == "dual" and k > 1
        project = softmax_null_projector(k, d) if use_null else None
        est = estimate_from_operator(
            op,
            num_steps=num_steps,
            num_vectors=num_vectors,
            seed=seed,
            distribution=distribution,
            block_size=block_size,
            project=project,
            null_dim=d if use_null else 0,
            top_k=top_k,
            top_steps=top_steps,
            exact_trace=plan.storage != "stream",
            output=output,
            storage=plan.storage,
            reason=plan.reason,
            num_points=num_points,
            sigma=sigma,
            rel_sigma=rel_sigma,
            log_scale=log_scale,
            zero_tol=zero_tol,
            progress=progress,
        )
    finally:
        if tmp is not None and not keep_file:
            tmp.unlink(missing_ok=True)
    params = est.params | {
        "file": str(tmp) if tmp is not None and keep_file else None,
        "seconds_store": t_store,
        "seconds_estimate": est.seconds,
        "deflate": bool(deflate),
    }
    return replace(est, seconds=time.perf_counter() - t0, params=params)


def _rows_of(batch: Any) -> np.ndarray:
    """One batch's rows as a CPU numpy array ``(b, kd)``."""
    rows = batch.rows if hasattr(batch, "rows") else batch
    if isinstance(rows, torch.Tensor):
        rows = rows.detach().cpu().reshape(rows.shape[0], -1).numpy()
    return np.asarray(rows).reshape(rows.shape[0], -1)


def estimate_esd(
    model: nn.Module,
    data: Any,
    *,
    method: str = "auto",
    output: str = "softmax",
    scale: str = "n",
    side: str = "auto",
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    batch_size: int | None = None,
    jacobian_method: str = "auto",
    num_steps: int = 80,
    num_vectors: int = 10,
    seed: int = 0,
    distribution: str = "rademacher",
    block_size: int | None = None,
    top_k: int = 10,
    top_steps: int = 0,
    storage: str = "auto",
    deflate: bool = True,
    workdir: str | os.PathLike | None = None,
    keep_file: bool = False,
    max_exact_dim: int = MAX_EXACT_DIM,
    max_memory: int | None = None,
    num_points: int = 512,
    sigma: float | None = None,
    rel_sigma: float = 0.01,
    log_scale: bool = False,
    zero_tol: float = 1e-6,
    progress: bool = False,
) -> ESDEstimate:
    """ESD of M/n (``scale="n"``) or M = 𝒥𝒥^T (``scale="none"``): exact or SLQ estimate.

    ``method="auto"`` follows :func:`plan_esd` (exact if the smaller side has dim <=
    ``max_exact_dim`` and fits in memory; the side from :func:`jacspec.spectra.gram.gram_side` with
    the deflated dimension ``(k-1)d`` for softmax outputs). SLQ: ``num_steps`` Lanczos steps
    with ``num_vectors`` ``distribution`` start vectors drawn from ``seed``; 𝒥 stored per
    ``storage`` ("memory", "file" = float .npy in ``workdir``, deleted unless ``keep_file``,
    "stream" = recomputed per pass). Density: ``num_points`` grid, Gaussian width ``sigma``
    (default ``rel_sigma`` x grid span), in log10 λ if ``log_scale``. ``deflate``:
    for
    softmax outputs the exact Gram is built in the class-sum-zero basis, and on the dual
    side SLQ skips the known d-dim null space of class-constant vectors and adds its exact
    atom 1/k at 0 (:func:`jacspec.spectra.operators.softmax_null_projector`).
    ``jacobian_method``: the
    engine's batched backward (:func:`jacspec.jacobian.engine.iter_jacobians`).
    """
    from jacspec.data.batches import require_reiterable
    require_reiterable(data, "estimate_esd")
    from jacspec._util.validation import check_choice
    from jacspec.jacobian.engine import METHODS as JACOBIAN_METHODS
    from jacspec.jacobian.engine import OUTPUTS, iter_jacobians

    check_choice("output", output, OUTPUTS)
    check_choice("jacobian_method", jacobian_method, JACOBIAN_METHODS)
    t0 = time.perf_counter()
    n, k, d = problem_shape(model, data, dtype)
    run_dtype = engine_dtype(model, dtype)
    itemsize = torch.empty((), dtype=run_dtype).element_size()
    plan = plan_esd(
        n,
        k * d,
        itemsize=itemsize,
        method=method,
        side=side,
        storage=storage,
        max_exact_dim=max_exact_dim,
        max_memory=max_memory,
        workdir=workdir,
        cols=gram_cols(k, d, output, deflate),
    )
    logger.info("estimate_esd: %s", plan.reason)
    density_kw = dict(
        num_points=num_points, sigma=sigma, rel_sigma=rel_sigma, log_scale=log_scale,
        zero_tol=zero_tol,
    )
    jac_kw: dict[str, Any] = dict(
        output=output, dtype=dtype, device=device, batch_size=batch_size, method=jacobian_method
    )
    if plan.method == "exact":
        from jacspec.spectra.exact import esd

        e = esd(
            model, data, side=plan.side, scale=scale, max_memory=max_memory, progress=progress,
            deflate=deflate, output=output, dtype=dtype, device=device, batch_size=batch_size,
            jacobian_method=jacobian_method,
        )
        ev = np.asarray(e.eigenvalues, dtype=np.float64)
        dens = _density(ev, None, density_kw, "exact")
        tr = float(ev.sum())
        kk = min(top_k, ev.size)
        return ESDEstimate(
            grid=dens.grid,
            density=dens.density,
            nodes=ev,
            weights=np.full(ev.size, 1.0 / ev.size),
            trace=tr,
            trace_estimate=tr,
            trace_stderr=0.0,
            top_eigenvalues=ev[:kk].copy(),
            top_residuals=np.zeros(kk),
            lambda_max=float(ev[0]),
            zero_mass=dens.zero_mass,
            method="exact",
            side=e.side,
            dim=ev.size,
            n=n,
            kd=k * d,
            scale=scale,
            output=output,
            storage=None,
            seconds=time.perf_counter() - t0,
            reason=plan.reason,
            params={"eigensolver": "syevd (float64)", "rank": e.rank, "dtype": e.dtype,
                    "sigma": dens.sigma, "log_scale": log_scale, "zero_tol": zero_tol,
                    "deflate": bool(deflate), "jacobian_method": jacobian_method},
        )
    est = estimate_from_batches(
        lambda: iter_jacobians(model, data, progress=progress and plan.storage != "stream",
                               **jac_kw),
        n=n,
        k=k,
        d=d,
        plan=plan,
        output=output,
        scale=scale,
        dtype=run_dtype,
        deflate=deflate,
        num_steps=num_steps,
        num_vectors=num_vectors,
        seed=seed,
        distribution=distribution,
        block_size=block_size,
        top_k=top_k,
        top_steps=top_steps,
        workdir=workdir,
        keep_file=keep_file,
        progress=progress,
        **density_kw,
    )
    params = est.params | {"jacobian_method": jacobian_method}
    return replace(est, seconds=time.perf_counter() - t0, params=params)
