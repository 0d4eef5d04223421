"""Planning the rows of :func:`jacspec.analyze` before any Jacobian is computed.

Each row is one matrix: the input->output data Jacobian and, per hidden layer, its
input->layer and layer->output Jacobians. :func:`plan_rows` reads every row's shape from
one probe batch and decides how it is computed (exact, SLQ estimate, or skipped) from the
memory its Gram needs (:func:`jacspec.spectra.gram.gram_bytes`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from jacspec._util.memory import memory_limit
from jacspec._util.names import MAIN
from jacspec.data.batches import first_batch
from jacspec.jacobian.engine import _check_inputs, prepare_model
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
    from jacspec.spectra.plan import engine_dtype, plan_esd, problem_shape

    n, k, d = problem_shape(model, data, dtype)
    itemsize = torch.empty((), dtype=engine_dtype(model, dtype)).element_size()
    limit = memory_limit(max_memory)
    main_d, main_route = d, "direct"
    if route != "direct" and not (route == "auto" and n and n * k * d * 8 <= null_bytes):
        from jacspec.jacobian.factored import find_first_linear

        run_model, dt, dev = prepare_model(model, dtype, device)
        x0, _ = first_batch(data)
        first, _why = find_first_linear(run_model, x0.to(device=dev, dtype=dt))
        if first is not None and (route == "factored" or first.w < first.d):
            main_d, main_route = first.w, "factored"
    specs: list[tuple[str, str, str | None, str, int, int]] = [
        (MAIN, "main", None, output, k, main_d)
    ]
    if layers is not None:
        run_model, dt, dev = prepare_model(eager_model(model), dtype, device)
        x0, _ = first_batch(data)
        _check_inputs(x0)
        chosen, _ = select_layers(run_model, x0.to(device=dev, dtype=dt), layers)
        for h in chosen:
            specs.append((f"input->{h.name}", "input_to_layer", h.name, "layer", h.width, d))
            specs.append((f"{h.name}->output", "layer_to_output", h.name, output, k, h.width))
    plans = []
    for label, kind, layer, out, kk, dd in specs:
        cols = gram_cols(kk, dd, out, deflate)
        chosen_side = gram_side(side, n, cols)
        need = gram_bytes(chosen_side, n, cols, itemsize)
        one = 3 * kk * dd * itemsize
        ep = None
        if one > limit:
            how, why = "skipped", (
                f"one example's Jacobian ({kk} x {dd}) needs {format_bytes(one)} > "
                f"{format_bytes(limit)} (max_memory)"
            )
        elif method == "exact":
            if need <= limit:
                how, why = "exact", f"exact {chosen_side} Gram: {format_bytes(need)} fits"
            elif kind == "main":
                check_fits(
                    chosen_side, n, cols, itemsize, max_memory,
                    estimate="jacspec.analyze(..., method='auto')",
                )
                how, why = "exact", ""
            else:
                how, why = "skipped", (
                    f"the exact {chosen_side} Gram (n={n}, cols={cols}) needs "
                    f"{format_bytes(need)} > {format_bytes(limit)} (max_memory); "
                    "method='auto' estimates it"
                )
        else:
            ep = plan_esd(
                n, kk * dd, cols=cols, itemsize=itemsize, method=method, side=side,
                max_memory=max_memory,
            )
            how, why = ep.method, ep.reason
        plans.append(
            RowPlan(label, kind, layer, out, n, kk, dd, cols, chosen_side, how, why, ep,
                    main_route if kind == "main" else "direct")
        )
    return plans
