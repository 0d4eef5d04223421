"""ESD of the data Jacobian, exact when it fits, estimated (SLQ) when it does not.

:func:`estimate_esd` decides per problem (:func:`jacspec.spectra.plan.plan_esd`): the exact
path (:func:`jacspec.spectra.exact.esd`) forms the smaller Gram side (dim = min(n, kd)) in
float64 and diagonalises it, O(dim^2) memory and O(dim^3) time; the estimate path applies
that side as a matrix-free operator (:mod:`jacspec.spectra.operators`) and runs stochastic
Lanczos quadrature (:mod:`jacspec.spectra.slq`), block Lanczos for the top eigenvalues
(:mod:`jacspec.spectra.lanczos`) and the exact trace ||𝒥||_F^2 / c.
Both return an :class:`~jacspec.spectra.esd_estimate.ESDEstimate` (a
:class:`~jacspec.spectra.spectrum.Spectrum`) with the same fields, recording which method ran
and why.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from jacspec.jacobian.options import JacobianOptions
from jacspec.spectra.esd_estimate import ESDEstimate, estimate_from_esd
from jacspec.spectra.exact import esd
from jacspec.spectra.gram import gram_cols
from jacspec.spectra.lanczos import top_eigenvalues
from jacspec.spectra.operators import (
    ArrayRows,
    FileRows,
    GramOperator,
    StreamRows,
    softmax_null_projector,
    write_jacobian_memmap,
)
from jacspec.spectra.plan import MAX_EXACT_DIM, EsdPlan, engine_dtype, plan_esd, problem_shape
from jacspec.spectra.slq import slq, spectral_density

logger = logging.getLogger(__name__)

__all__ = ["estimate_esd", "estimate_from_batches", "estimate_from_operator"]


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
    **fields: Any,
) -> ESDEstimate:
    """SLQ density, block-Lanczos top eigenvalues and the trace of a Gram operator.

    Cost in passes over 𝒥 (dual side; double for primal): ``num_steps`` for SLQ with
    ``num_vectors`` vectors per pass (``block_size`` at a time); the exact trace rides along.
    Top-k: ``top_steps=0`` (default) takes Ritz values on the SLQ block Krylov space
    K_m(A, [v_1..v_s]) for free; ``top_steps > 0`` runs a separate block Lanczos with
    ``top_k + 5`` vectors for that many passes. ``project``/``null_dim``:
    a known null space deflated from SLQ (see :func:`jacspec.spectra.slq.slq`).
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
    dens = spectral_density(nodes, w, method="slq", **density_kw)
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
        grid_density=dens.density,
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
    **fields: Any,
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
    scale: str = "n",
    side: str = "auto",
    options: JacobianOptions | None = None,
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
    **fields: Any,
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
    ``options`` (:class:`~jacspec.jacobian.options.JacobianOptions`) or any of its fields
    as keywords (``output``, default softmax, ``dtype``, ``device``, ``batch_size``,
    ``jacobian_method``: the engine's batched backward, ``check_independence``, ``route``,
    ``sketch``, ...) are resolved once and reach the rows whole: both the exact path
    (:func:`jacspec.esd`) and SLQ read them from one
    :class:`~jacspec.jacobian.source.JacobianSource` (factored rows have ``d`` = the first
    layer's width, sketched rows ``k = r`` and no class-sum-zero deflation).
    """
    from jacspec.data.batches import require_reiterable
    require_reiterable(data, "estimate_esd")
    from jacspec.jacobian.input_module import at_input_module
    from jacspec.jacobian.options import resolve_options
    from jacspec.jacobian.source import JacobianSource

    opts = resolve_options(options, **fields)
    given_opts = opts
    model, data, opts = at_input_module(model, data, opts)
    output, jacobian_method = opts.output, opts.method
    t0 = time.perf_counter()
    n = problem_shape(model, data, opts.dtype)[0]
    source = JacobianSource.from_model(model, data, opts.replace(progress=False))
    k, d = source.k, source.d
    deflate = bool(deflate) and source.rows_sum_to_zero
    run_dtype = engine_dtype(model, opts.dtype)
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
    if plan.method == "exact":
        e = esd(
            model, data, side=plan.side, scale=scale, max_memory=max_memory, progress=progress,
            deflate=deflate, options=opts,
        )
        est = estimate_from_esd(e, top_k=top_k, reason=plan.reason, **density_kw)
        params = est.params | {"deflate": deflate, "jacobian_method": jacobian_method,
                               "jacobian": given_opts.to_dict()}
        return replace(est, seconds=time.perf_counter() - t0, params=params)
    if progress and plan.storage != "stream":  # one bar per pass that computes the rows
        source = JacobianSource.from_model(model, data, opts.replace(progress=True))
    est = estimate_from_batches(
        lambda: iter(source),
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
    params = est.params | {"jacobian_method": jacobian_method, "jacobian": given_opts.to_dict(),
                           "route": source.route, **source.info}
    return replace(est, seconds=time.perf_counter() - t0, params=params)
