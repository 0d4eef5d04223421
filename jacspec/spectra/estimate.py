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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from jacspec.jacobian.engine import JacobianBatch
from jacspec.jacobian.input_module import at_input_module
from jacspec.jacobian.options import JacobianOptions
from jacspec.jacobian.source import JacobianSource
from jacspec.spectra.esd_estimate import ESDEstimate, estimate_from_esd
from jacspec.spectra.exact import esd
from jacspec.spectra.gram import gram_cols
from jacspec.spectra.lanczos import TopEigenvalues, top_eigenvalues
from jacspec.spectra.operators import (
    FileRows,
    GramOperator,
    numpy_dtype,
    softmax_null_projector,
    source_of_rows,
    write_jacobian_memmap,
)
from jacspec.spectra.options import (
    DENSITY_FIELDS,
    SLQ_FIELDS,
    DensityOptions,
    SLQOptions,
    resolve_density_options,
    resolve_slq_options,
    split_spectrum_fields,
)
from jacspec.spectra.plan import MAX_EXACT_DIM, EsdPlan, engine_dtype, plan_esd, problem_shape
from jacspec.spectra.slq import LanczosQuadrature, slq_with, spectral_density

logger = logging.getLogger(__name__)

__all__ = [
    "estimate_esd",
    "estimate_from_batches",
    "estimate_from_operator",
    "estimate_from_source",
]


def estimate_from_operator(
    op: GramOperator,
    *,
    slq_options: SLQOptions | None = None,
    density_options: DensityOptions | None = None,
    project: Callable[[np.ndarray], np.ndarray] | None = None,
    null_dim: int = 0,
    exact_trace: bool = True,
    output: str | None = None,
    storage: str | None = None,
    reason: str = "",
    progress: bool = False,
    **fields: Any,
) -> ESDEstimate:
    """SLQ density, block-Lanczos top eigenvalues and the trace of a Gram operator.

    ``slq_options`` (:class:`~jacspec.spectra.options.SLQOptions`) and ``density_options``
    (:class:`~jacspec.spectra.options.DensityOptions`), or their fields as keywords
    (``num_steps``, ``num_vectors``, ``seed``, ``distribution``, ``block_size``, ``top_k``,
    ``top_steps``; ``num_points``, ``sigma``, ``rel_sigma``, ``log_scale``, ``zero_tol``).
    Cost in passes over 𝒥 (dual side; double for primal): ``num_steps`` for SLQ with
    ``num_vectors`` vectors per pass (``block_size`` at a time); the exact trace rides along.
    Top-k: ``top_steps=0`` (default) takes Ritz values on the SLQ block Krylov space
    K_m(A, [v_1..v_s]) for free; ``top_steps > 0`` runs a separate block Lanczos with
    ``top_k + 5`` vectors for that many passes. ``project``/``null_dim``:
    a known null space deflated from SLQ (see :func:`jacspec.spectra.slq.slq`).
    """
    so, do = _resolve_spectrum_options(slq_options, density_options, fields,
                                       "estimate_from_operator")
    t0 = time.perf_counter()
    passes0 = op.num_passes
    q = slq_with(op, so, project=project, null_dim=null_dim, progress=progress,
                 top_k=min(so.top_k, op.shape[0]) if so.top_steps == 0 else 0)
    top = _top_of(op, q, so, progress)
    tr_exact = op.trace() if exact_trace else float("nan")
    nodes, w = q.flat()
    dens = spectral_density(nodes, w, method="slq", density_options=do)
    lam_max = max(float(top.values[0]), q.lambda_max)
    params = _slq_params(q, top, so, do, dens.sigma, exact_trace=exact_trace,
                         passes=op.num_passes - passes0, dtype=op.dtype, lam_max=lam_max)
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


def _slq_params(
    q: LanczosQuadrature, top: TopEigenvalues, so: SLQOptions, do: DensityOptions,
    sigma: float, *, exact_trace: bool, passes: int, dtype: Any, lam_max: float,
) -> dict[str, Any]:
    """Every setting of an SLQ estimate, with its cost in passes and its resolution
    λ_max π²/(16 m²) (the smallest Gauss node spacing near 0 with m steps)."""
    return q.params() | {
        "top_k": top.k,
        "top_steps": so.top_steps,
        "top_block_size": top.block_size,
        "top_method": top.method,
        "exact_trace": exact_trace,
        "operator_passes": passes,
        "dtype": str(dtype).replace("torch.", ""),
        "sigma": sigma,
        "log_scale": do.log_scale,
        "zero_tol": do.zero_tol,
        # smallest Gauss node spacing near 0 on [0, λ_max]: finer structure is not resolved
        "resolution": lam_max * math.pi**2 / (16 * q.num_steps**2),
    }


def _resolve_spectrum_options(
    slq_options: SLQOptions | None,
    density_options: DensityOptions | None,
    fields: dict[str, Any],
    where: str,
) -> tuple[SLQOptions, DensityOptions]:
    """The SLQ and density options from the options given and keyword fields; any other
    keyword is refused (a TypeError naming it)."""
    slq_fields, density_fields, rest = split_spectrum_fields(fields)
    if rest:
        raise TypeError(
            f"{where}() got an unexpected keyword {sorted(rest)[0]!r}; the SLQ options are "
            f"{', '.join(SLQ_FIELDS)} and the density options {', '.join(DENSITY_FIELDS)}"
        )
    return (resolve_slq_options(slq_options, **slq_fields),
            resolve_density_options(density_options, **density_fields))


def _top_of(
    op: GramOperator, q: LanczosQuadrature, so: SLQOptions, progress: bool
) -> TopEigenvalues:
    """The top eigenvalues: Rayleigh-Ritz on the SLQ block Krylov space (``top_steps=0``,
    no extra passes) or a separate block Lanczos of ``top_steps`` passes."""
    if so.top_steps == 0:
        assert q.top is not None
        return q.top
    return top_eigenvalues(
        op, min(so.top_k, op.shape[0]), num_steps=so.top_steps, seed=so.seed + 1,
        progress=progress,
    )


def estimate_from_source(
    source: JacobianSource,
    *,
    plan: EsdPlan | None = None,
    side: str = "auto",
    storage: str = "auto",
    scale: str = "n",
    deflate: bool = True,
    output: str | None = None,
    slq_options: SLQOptions | None = None,
    density_options: DensityOptions | None = None,
    workdir: str | os.PathLike | None = None,
    keep_file: bool = False,
    max_memory: int | None = None,
    progress: bool = False,
    **fields: Any,
) -> ESDEstimate:
    """SLQ estimate of the Gram of a :class:`~jacspec.jacobian.source.JacobianSource`'s rows.

    ``plan`` (:func:`plan_esd`, method ``"slq"``; default: planned here from ``side``,
    ``storage``, ``max_memory`` and ``workdir``) says the side and where the rows are kept
    between passes: ``"memory"`` (on the rows' device when it has room, else the host),
    ``"file"`` (a float .npy in ``workdir``, deleted unless ``keep_file``) or ``"stream"``
    (the source recomputes them per pass). ``deflate``: rows summing to zero over the
    classes (``source.rows_sum_to_zero``) on the dual side have the known ``d``-dim null
    space projected out. ``output``: the estimate's label (default ``source.output``).
    The source's settings (route, sketch, ...) are kept in the estimate's ``params``.
    ``slq_options``/``density_options`` or their fields as keywords: as
    :func:`estimate_from_operator`.
    """
    so, do = _resolve_spectrum_options(slq_options, density_options, fields,
                                       "estimate_from_source")
    t0 = time.perf_counter()
    n, k, d = source.count(), source.k, source.d
    use_null = bool(deflate) and source.rows_sum_to_zero and k > 1
    if plan is None:
        itemsize = torch.empty((), dtype=source.dtype).element_size()
        plan = plan_esd(n, k * d, itemsize=itemsize, method="slq", side=side, storage=storage,
                        max_memory=max_memory, workdir=workdir,
                        cols=gram_cols(k, d, "softmax" if use_null else "logits", use_null))
    rows, tmp = _store_rows(source, plan.storage, workdir)
    t_store = time.perf_counter() - t0
    try:
        op = GramOperator(rows, side=plan.side, scale=scale)
        use_null = use_null and plan.side == "dual"
        est = estimate_from_operator(
            op, slq_options=so, density_options=do,
            project=softmax_null_projector(k, d) if use_null else None,
            null_dim=d if use_null else 0, exact_trace=plan.storage != "stream",
            output=source.output if output is None else output, storage=plan.storage,
            reason=plan.reason, progress=progress,
        )
    finally:
        if tmp is not None and not keep_file:
            tmp.unlink(missing_ok=True)
    params = est.params | {
        "file": str(tmp) if tmp is not None and keep_file else None,
        "seconds_store": t_store,
        "seconds_estimate": est.seconds,
        "deflate": bool(deflate),
        "device": str(op.device),
        "route": source.route,
        **source.info,
        "source": source.settings,
    }
    return replace(est, seconds=time.perf_counter() - t0, params=params)


def estimate_from_batches(
    make_batches: Callable[[], Iterable[Any]],
    *,
    n: int,
    k: int,
    d: int,
    plan: EsdPlan,
    output: str | None = "softmax",
    dtype: torch.dtype = torch.float32,
    **kwargs: Any,
) -> ESDEstimate:
    """:func:`estimate_from_source` of the rows that ``make_batches()`` yields (a fresh pass
    each call): kept for callers holding a factory, not a source.

    ``make_batches``: a factory of Jacobian batches (``JacobianBatch``, tensors or arrays of
    shape ``(b, k, *)`` or ``(b, kd)``), e.g. ``lambda: iter_jacobians(model, data)``, or of
    a :class:`~jacspec.jacobian.source.JacobianSource` (then used as it is); ``(n, k, d)``
    its shape, ``dtype`` its rows' and ``output`` (softmax: rows sum to zero over classes).
    The other keywords (``plan``, ``scale``, ``deflate``, the options) go to
    :func:`estimate_from_source`.
    """
    first = make_batches()
    if isinstance(first, JacobianSource):
        return estimate_from_source(first, plan=plan, output=output, **kwargs)
    del first

    def make() -> Iterator[JacobianBatch]:
        start = 0
        for b in make_batches():
            jac = b.jac if isinstance(b, JacobianBatch) else b
            jac = torch.from_numpy(np.asarray(jac)) if not isinstance(jac, torch.Tensor) else jac
            yield JacobianBatch(jac=jac.reshape(jac.shape[0], k, d), x=None, y=None, out=None,
                                start=start)
            start += int(jac.shape[0])

    source = JacobianSource(make, n=n, k=k, input_shape=(d,), dtype=dtype,
                            rows_sum_to_zero=output == "softmax", output=output or "logits",
                            kind="batches")
    return estimate_from_source(source, plan=plan, output=output, **kwargs)


def _store_rows(
    source: JacobianSource, storage: str | None, workdir: str | os.PathLike | None
) -> tuple[JacobianSource, Path | None]:
    """The rows as the operator reads them: held in memory (a tensor on the rows' device,
    the host when that device lacks room), written once to a float .npy file in
    ``workdir`` (returned, for the caller to delete), or the source itself (recomputed per
    pass)."""
    if storage == "memory":
        n, kd = source.count(), source.cols
        J: torch.Tensor | None = None
        s = 0
        for r in source.rows():
            if J is None:
                J = torch.empty((n, kd), dtype=source.dtype, device=_memory_device(
                    r.device, n * kd * r.element_size()))
            if s + r.shape[0] > n:
                raise ValueError(f"the Jacobian source gave more than n={n} rows")
            J[s : s + r.shape[0]] = r.detach()
            s += int(r.shape[0])
        if J is None or s != n:
            raise ValueError(f"the Jacobian source gave {s} rows, expected n={n}")
        return JacobianSource.from_array(J, k=1), None
    if storage == "file":
        folder = Path(workdir) if workdir is not None else Path(tempfile.gettempdir())
        fd, name = tempfile.mkstemp(prefix="jacspec_J_", suffix=".npy", dir=folder)
        os.close(fd)
        tmp = Path(name)
        write_jacobian_memmap(iter(source), tmp, dtype=numpy_dtype(source.dtype))
        return source_of_rows(FileRows(tmp)), tmp
    return source, None


def _memory_device(device: torch.device, nbytes: int) -> torch.device:
    """``device`` when 𝒥 (``nbytes``) takes at most half of its free memory (always, for
    the host: the plan sized it), else the host."""
    if device.type != "cuda":
        return device
    free, _ = torch.cuda.mem_get_info(device)
    if nbytes <= free // 2:
        return device
    logger.info("estimate: 𝒥 (%d bytes) kept on the host, %s has %d bytes free",
                nbytes, device, free)
    return torch.device("cpu")


def estimate_esd(
    model: nn.Module,
    data: Any,
    *,
    method: str = "auto",
    scale: str = "n",
    side: str = "auto",
    options: JacobianOptions | None = None,
    slq_options: SLQOptions | None = None,
    density_options: DensityOptions | None = None,
    storage: str = "auto",
    deflate: bool = True,
    workdir: str | os.PathLike | None = None,
    keep_file: bool = False,
    max_exact_dim: int = MAX_EXACT_DIM,
    max_memory: int | None = None,
    progress: bool = False,
    **fields: Any,
) -> ESDEstimate:
    """ESD of M/n (``scale="n"``) or M = 𝒥𝒥^T (``scale="none"``): exact or SLQ estimate.

    ``method="auto"`` follows :func:`plan_esd` (exact if the smaller side has dim <=
    ``max_exact_dim`` and fits in memory; the side from :func:`jacspec.spectra.gram.gram_side` with
    the deflated dimension ``(k-1)d`` for softmax outputs). SLQ (``slq_options``, an
    :class:`~jacspec.spectra.options.SLQOptions`, or its fields as keywords): ``num_steps``
    Lanczos steps with ``num_vectors`` ``distribution`` start vectors drawn from ``seed``,
    ``top_k`` top eigenvalues (``top_steps``); 𝒥 stored per
    ``storage`` ("memory", "file" = float .npy in ``workdir``, deleted unless ``keep_file``,
    "stream" = recomputed per pass). Density (``density_options``, a
    :class:`~jacspec.spectra.options.DensityOptions`, or its fields): ``num_points`` grid,
    Gaussian width ``sigma`` (default ``rel_sigma`` x grid span), in log10 λ if
    ``log_scale``, zeros below ``zero_tol`` λ_max. ``deflate``: for
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
    from jacspec.jacobian.options import resolve_options

    slq_fields, density_fields, fields = split_spectrum_fields(fields)
    given_opts = resolve_options(options, **fields)  # as given, for the settings
    model, data, opts = at_input_module(model, data, given_opts)
    so = resolve_slq_options(slq_options, **slq_fields)
    do = resolve_density_options(density_options, **density_fields)
    t0 = time.perf_counter()
    p = _plan_problem(model, data, opts, deflate=deflate, plan_fields={
        "method": method, "side": side, "storage": storage, "max_exact_dim": max_exact_dim,
        "max_memory": max_memory, "workdir": workdir})
    logger.info("estimate_esd: %s", p.plan.reason)
    if p.plan.method == "exact":
        e = esd(
            model, data, side=p.plan.side, scale=scale, max_memory=max_memory,
            progress=progress, deflate=p.deflate, options=opts,
        )
        est = estimate_from_esd(e, top_k=so.top_k, reason=p.plan.reason, density_options=do)
        params = est.params | {"deflate": p.deflate, "jacobian_method": opts.method,
                               "jacobian": given_opts.to_dict()}
        return replace(est, seconds=time.perf_counter() - t0, params=params)
    source = p.source
    if progress and p.plan.storage != "stream":  # one bar per pass that computes the rows
        source = JacobianSource.from_model(model, data, opts.replace(progress=True))
    est = estimate_from_source(
        source, plan=p.plan, output=opts.output, scale=scale, deflate=p.deflate,
        slq_options=so, density_options=do, workdir=workdir, keep_file=keep_file,
        progress=progress,
    )
    params = est.params | {"jacobian_method": opts.method, "jacobian": given_opts.to_dict()}
    return replace(est, seconds=time.perf_counter() - t0, params=params)


@dataclass(frozen=True)
class _Problem:
    """What :func:`estimate_esd` decided before any Jacobian: the rows' source (no progress
    bar), their shape (n, k, d), the engine's dtype, whether to deflate, and the plan."""

    source: Any
    n: int
    k: int
    d: int
    run_dtype: torch.dtype
    deflate: bool
    plan: EsdPlan


def _plan_problem(model: nn.Module, data: Any, opts: JacobianOptions, *, deflate: bool,
                  plan_fields: dict[str, Any]) -> _Problem:
    """The rows' source and shape and :func:`plan_esd`'s decision for them (exact when the
    smaller Gram side fits, else SLQ and where 𝒥 is stored); ``plan_fields``: the user's
    method, side, storage, max_exact_dim, max_memory and workdir, passed to plan_esd as
    given."""
    n = problem_shape(model, data, opts.dtype)[0]
    source = JacobianSource.from_model(model, data, opts.replace(progress=False))
    k, d = source.k, source.d
    deflate = bool(deflate) and source.rows_sum_to_zero
    run_dtype = engine_dtype(model, opts.dtype)
    itemsize = torch.empty((), dtype=run_dtype).element_size()
    plan = plan_esd(n, k * d, itemsize=itemsize, cols=gram_cols(k, d, opts.output, deflate),
                    **plan_fields)
    return _Problem(source, n, k, d, run_dtype, deflate, plan)
