"""Planning the rows of :func:`jacspec.analyze` before any Jacobian is computed.

Each row is one matrix: the input->output data Jacobian and, per hidden layer, its
input->layer and layer->output Jacobians. :func:`plan_rows` reads every row's shape from
one probe batch and decides how it is computed (exact, SLQ estimate, or skipped) from the
memory its Gram needs (:func:`jacspec.spectra.gram.gram_bytes`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn

from jacspec._util.memory import memory_limit
from jacspec._util.names import MAIN
from jacspec.data.batches import first_batch
from jacspec.jacobian.engine import check_inputs, prepare_model
from jacspec.jacobian.layers import eager_model, select_layers
from jacspec.spectra.gram import (
    check_fits,
    format_bytes,
    gram_bytes,
    gram_cols,
    gram_side,
)


@dataclass(frozen=True)
class RowPlan:
    """How one row of :func:`analyze` is computed, decided before any Jacobian is.

    ``kind``: ``"main"``, ``"input_to_layer"`` or ``"layer_to_output"``; ``(n, k, d)`` the
    Jacobian's shape (``k`` = layer width m for input -> layer, ``d`` = m for layer -> output);
    ``cols`` the Gram's row width (:func:`jacspec.spectra.gram.gram_cols`); ``method`` ``"exact"``,
    ``"slq"`` or ``"skipped"`` and ``reason`` why; ``route`` the route the exact rows were
    sized for (``"factored"``: ``d`` is the first linear layer's width).
    """

    label: str
    kind: str
    layer: str | None
    output: str
    n: int
    k: int
    d: int
    cols: int
    side: str
    method: str
    reason: str
    esd_plan: Any = None
    route: str = "direct"


def plan_rows(
    model: nn.Module,
    data: Any,
    *,
    layers: str | Sequence[str] | None = None,
    output: str = "softmax",
    side: str = "auto",
    method: str = "exact",
    deflate: bool = True,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    max_memory: int | None = None,
    route: str = "direct",
    null_bytes: int = 0,
) -> list[RowPlan]:
    """Plan every row of :func:`analyze` from one probe batch (no Jacobians computed).

    Sizes: ``n`` from the data, ``k`` from one forward pass, each layer's width ``m`` from
    one traced forward pass (:func:`jacspec.jacobian.layers.select_layers`). ``method="exact"``:
    exact rows; a layer row whose exact Gram (:func:`jacspec.spectra.gram.gram_bytes`) exceeds
    ``max_memory`` is ``"skipped"`` (the input->output row raises instead). ``"auto"``:
    :func:`jacspec.spectra.plan.plan_esd` per row (SLQ when exact is out of reach). ``"slq"``:
    SLQ rows. A row whose single example's Jacobian alone exceeds the limit is skipped.
    ``route`` (of the input->output row; :mod:`jacspec.jacobian.factored`): with ``"auto"``
    or ``"factored"`` the exact input->output Gram is sized at the first linear layer's width
    ``w`` when the factored route applies (``w < d`` for auto), unless auto keeps the direct
    route for the randomized null (``n*k*d*8 <= null_bytes``), as :func:`analyze` does.
    """
    from jacspec.spectra.plan import engine_dtype, problem_shape

    n, k, d = problem_shape(model, data, dtype)
    itemsize = torch.empty((), dtype=engine_dtype(model, dtype)).element_size()
    main_d, main_route = _main_width(model, data, (n, k, d), route=route, null_bytes=null_bytes,
                                     dtype=dtype, device=device)
    specs = [_Spec(MAIN, "main", None, output, k, main_d)]
    if layers is not None:
        specs += _layer_specs(model, data, layers, output=output, k=k, d=d, dtype=dtype,
                              device=device)
    sizing = _Sizing(n=n, side=side, method=method, deflate=deflate, itemsize=itemsize,
                     max_memory=max_memory, limit=memory_limit(max_memory))
    return [_plan_row(s, sizing, main_route if s.kind == "main" else "direct") for s in specs]


def row_route(plan: RowPlan, route: str, *, randomize: bool) -> str:
    """The route a row's Jacobians are computed by, given analyze's ``route``.

    An exact input->output row under ``"auto"`` keeps the direct route it was sized for when
    the randomized null needs the entries of 𝒥 (without the null, auto decides by itself);
    an SLQ row under ``"auto"`` is direct (an estimated density over the factored dual's kw
    dimensions would carry another zero atom than 𝒥's). An explicit route is kept.
    """
    if route != "auto":
        return route
    if plan.method == "slq":
        return "direct"
    if plan.kind == "main" and plan.method == "exact" and randomize and plan.route == "direct":
        return "direct"
    return route


class _Spec(NamedTuple):
    """One row's matrix before sizing: its label, kind, layer, output map and ``k x d``."""

    label: str
    kind: str
    layer: str | None
    output: str
    k: int
    d: int


@dataclass(frozen=True)
class _Sizing:
    """What every row is sized against: ``n``, the Gram side asked for, analyze's method,
    ``deflate``, the engine's itemsize, ``max_memory`` and the limit in bytes it gives."""

    n: int
    side: str
    method: str
    deflate: bool
    itemsize: int
    max_memory: int | None
    limit: int


def _main_width(
    model: nn.Module, data: Any, shape: tuple[int, int, int], *, route: str, null_bytes: int,
    dtype: torch.dtype | None, device: torch.device | str | None,
) -> tuple[int, str]:
    """The input->output Gram's width ``d`` and route: the first linear layer's width ``w``
    on the factored route (explicit, or auto with ``w < d`` and 𝒥 not kept for the null)."""
    n, k, d = shape
    if route == "direct" or (route == "auto" and n and n * k * d * 8 <= null_bytes):
        return d, "direct"
    from jacspec.jacobian.factored import find_first_linear

    run_model, dt, dev = prepare_model(model, dtype, device)
    x0, _ = first_batch(data)
    first, _why = find_first_linear(run_model, x0.to(device=dev, dtype=dt))
    if first is not None and (route == "factored" or first.w < first.d):
        return first.w, "factored"
    return d, "direct"


def _layer_specs(
    model: nn.Module, data: Any, layers: str | Sequence[str], *, output: str, k: int, d: int,
    dtype: torch.dtype | None, device: torch.device | str | None,
) -> list[_Spec]:
    """Each chosen layer's two rows: input -> layer (``m x d``) and layer -> output
    (``k x m``), ``m`` its width from one traced forward pass."""
    run_model, dt, dev = prepare_model(eager_model(model), dtype, device)
    x0, _ = first_batch(data)
    check_inputs(x0)
    chosen, _ = select_layers(run_model, x0.to(device=dev, dtype=dt), layers)
    specs = []
    for h in chosen:
        specs.append(_Spec(f"input->{h.name}", "input_to_layer", h.name, "layer", h.width, d))
        specs.append(_Spec(f"{h.name}->output", "layer_to_output", h.name, output, k, h.width))
    return specs


def _plan_row(spec: _Spec, sz: _Sizing, route: str) -> RowPlan:
    """One row's plan: skipped when one example's Jacobian (3 k d itemsize) exceeds the limit;
    else exact when its Gram fits (the input->output row raises when it does not, a layer row
    is skipped), or :func:`jacspec.spectra.plan.plan_esd`'s choice for auto and slq."""
    from jacspec.spectra.plan import plan_esd

    n, kk, dd, itemsize, limit = sz.n, spec.k, spec.d, sz.itemsize, sz.limit
    cols = gram_cols(kk, dd, spec.output, sz.deflate)
    side = gram_side(sz.side, n, cols)
    need = gram_bytes(side, n, cols, itemsize)
    one = 3 * kk * dd * itemsize
    ep = None
    if one > limit:
        how, why = "skipped", (
            f"one example's Jacobian ({kk} x {dd}) needs {format_bytes(one)} > "
            f"{format_bytes(limit)} (max_memory)"
        )
    elif sz.method != "exact":
        ep = plan_esd(n, kk * dd, cols=cols, itemsize=itemsize, method=sz.method,
                      side=sz.side, max_memory=sz.max_memory)
        how, why = ep.method, ep.reason
    elif need <= limit:
        how, why = "exact", f"exact {side} Gram: {format_bytes(need)} fits"
    elif spec.kind == "main":
        check_fits(side, n, cols, itemsize, sz.max_memory,
                   estimate="jacspec.analyze(..., method='auto')")
        how, why = "exact", ""
    else:
        how, why = "skipped", (
            f"the exact {side} Gram (n={n}, cols={cols}) needs "
            f"{format_bytes(need)} > {format_bytes(limit)} (max_memory); "
            "method='auto' estimates it"
        )
    return RowPlan(spec.label, spec.kind, spec.layer, spec.output, n, kk, dd, cols, side, how,
                   why, ep, route)
